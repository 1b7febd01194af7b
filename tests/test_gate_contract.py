"""The contract every registered gate keeps (docs/gates.md); a new gate gets it for free."""

from __future__ import annotations

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.gates import Gate, create_gate, get_gate_info, list_gates

N = 16
ESTIMATORS = {"reparameterisation", "arm", "straight-through", "deterministic"}

pytestmark = pytest.mark.parametrize("name", list_gates())


def make(name: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A gate and the scores to pass it (None unless the gate reads weight scores)."""
    torch.manual_seed(seed)
    gate = create_gate(name, N).to(dtype)
    scores = None
    if gate.needs_scores:
        scores = (torch.rand(N) + 0.1).to(dtype)
        gate.calibrate(scores)
    return gate, scores


def in_unit_interval(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t).all() and (t >= 0).all() and (t <= 1).all())


def loss_of(z: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((z - target) ** 2).sum()


def training_step_gradient(gate: Gate, scores: torch.Tensor | None, target: torch.Tensor) -> None:
    """One step's gradient into the gate, through the antithetic pass for two-pass gates."""
    gate.train()
    loss = loss_of(gate(scores), target)
    if not gate.two_pass:
        loss.backward()
        return
    gate.begin_antithetic()
    antithetic_loss = loss_of(gate(scores), target)
    gate.end_antithetic()
    gate.add_two_pass_gradient(loss.item(), antithetic_loss.item())


def perturb(gate: Gate) -> None:
    """Move every parameter off its init so comparisons are not trivially equal."""
    with torch.no_grad():
        for p in gate.parameters():
            p.add_(0.3 * torch.randn_like(p))
    gate.after_optimizer_step()


def test_registry_metadata(name):
    info = get_gate_info(name)
    assert info.estimator in ESTIMATORS
    assert info.description and "\n" not in info.description
    assert issubclass(info.cls, Gate)
    # Every option is keyword-only with a default, so a bare build works.
    assert isinstance(create_gate(name, 3), info.cls)
    with pytest.raises(ConfigError, match="no_such_option"):
        create_gate(name, 3, no_such_option=1)


def test_training_sample_shape_and_range(name):
    gate, scores = make(name)
    gate.train()
    z = gate(scores)
    assert z.shape == (N,)
    assert in_unit_interval(z)


def test_training_sample_noise_matches_metadata(name):
    gate, scores = make(name)
    gate.train()
    torch.manual_seed(1)
    first = gate(scores)
    torch.manual_seed(2)
    second = gate(scores)
    assert torch.equal(first, second) != get_gate_info(name).stochastic


def test_eval_forward_is_deterministic(name):
    gate, scores = make(name)
    perturb(gate)
    gate.eval()
    torch.manual_seed(1)
    first = gate(scores)
    torch.manual_seed(2)
    assert torch.equal(first, gate(scores))


def test_hard_mask_is_bool(name):
    gate, scores = make(name)
    mask = gate.hard_mask(scores)
    assert mask.dtype == torch.bool
    assert mask.shape == (N,)


def test_eval_forward_is_hard_mask_times_test_scale(name):
    gate, scores = make(name)
    perturb(gate)
    gate.eval()
    mask = gate.hard_mask(scores)
    scale = gate.test_scale(scores)
    assert scale.shape == (N,)
    assert in_unit_interval(scale)
    # A kept group must carry weight: a zero scale would be a silent drop.
    assert (scale[mask] > 0).all()
    assert torch.equal(gate(scores), mask.to(scale.dtype) * scale)


def test_test_scale_is_one_unless_fractional(name):
    gate, scores = make(name)
    perturb(gate)
    if not get_gate_info(name).fractional_scale:
        assert torch.equal(gate.test_scale(scores), torch.ones(N))


def test_gradients_reach_parameters_in_training(name):
    gate, scores = make(name)
    target = torch.rand(N)
    # A few steps: one antithetic pair can give equal losses, leaving a zero ARM gradient.
    for _ in range(5):
        training_step_gradient(gate, scores, target)
    params = list(gate.parameters())
    assert params
    for p in params:
        assert p.grad is not None
        assert torch.isfinite(p.grad).all()
        assert (p.grad != 0).any()


def test_keep_probability_is_differentiable_and_in_range(name):
    gate, scores = make(name)
    keep = gate.keep_probability(scores)
    assert keep.shape == (N,)
    assert in_unit_interval(keep)
    keep.sum().backward()
    for p in gate.parameters():
        assert p.grad is not None
        assert (p.grad != 0).any()


def test_state_dict_round_trip(name):
    gate, scores = make(name, seed=0)
    perturb(gate)
    gate.set_progress(0.5)
    fresh, _ = make(name, seed=1)
    fresh_scores = None if scores is None else scores * 3  # a different calibration
    if fresh.needs_scores:
        fresh.calibrate(fresh_scores)
    fresh.load_state_dict(gate.state_dict())
    for g in (gate, fresh):
        g.eval()
    assert torch.equal(fresh(scores), gate(scores))
    assert torch.equal(fresh.keep_probability(scores), gate.keep_probability(scores))
    assert torch.equal(fresh.hard_mask(scores), gate.hard_mask(scores))
    # Training samples and their gradients depend on schedule state (temperatures) too.
    weights = torch.rand(N)
    samples, grads = [], []
    for g in (gate, fresh):
        g.train()
        torch.manual_seed(7)
        z = g(scores)
        samples.append(z.detach())
        if z.requires_grad:
            (z * weights).sum().backward()
        grads.append([p.grad for p in g.parameters()])
    assert torch.equal(samples[0], samples[1])
    for expected, got in zip(grads[0], grads[1], strict=True):
        assert (expected is None) == (got is None)
        assert expected is None or torch.equal(expected, got)


def test_state_dict_round_trip_into_uncalibrated_gate(name):
    gate, scores = make(name, seed=0)
    if gate.needs_scores:
        gate.calibrate(scores * 2)  # so a lazy re-calibration from `scores` would differ
    perturb(gate)
    gate.set_progress(0.5)
    torch.manual_seed(1)
    fresh = create_gate(name, N)
    fresh.load_state_dict(gate.state_dict())
    assert torch.equal(fresh.keep_probability(scores), gate.keep_probability(scores))


def test_schedule_and_steps_leave_gate_valid(name):
    gate, scores = make(name)
    target = torch.rand(N)
    for progress in torch.linspace(0, 1, 6).tolist():
        gate.set_progress(progress)
        gate.zero_grad()
        training_step_gradient(gate, scores, target)
        penalty = gate.keep_probability(scores).mean()
        penalty.backward()
        with torch.no_grad():  # plain SGD, lr 1: big steps that test the projections
            for p in gate.parameters():
                p.sub_(p.grad)
        gate.after_optimizer_step()
        gate.train()
        assert in_unit_interval(gate(scores))
        assert in_unit_interval(gate.keep_probability(scores))
        gate.eval()
        mask = gate.hard_mask(scores)
        assert mask.dtype == torch.bool
        assert torch.equal(gate(scores), mask.to(torch.float32) * gate.test_scale(scores))


def test_float64(name):
    gate, scores = make(name, dtype=torch.float64)
    gate.train()
    assert gate(scores).dtype == torch.float64
    assert gate.keep_probability(scores).dtype == torch.float64
    gate.eval()
    assert gate(scores).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda(name):
    gate, scores = make(name)
    gate = gate.to("cuda")
    scores = None if scores is None else scores.cuda()
    target = torch.rand(N, device="cuda")
    training_step_gradient(gate, scores, target)
    gate.set_progress(0.5)
    gate.after_optimizer_step()
    assert gate.keep_probability(scores).device.type == "cuda"
    gate.eval()
    assert gate(scores).device.type == "cuda"
