"""Each gate method against values computed by hand from the formulas in docs/gates.md."""

from __future__ import annotations

import math

import pytest
import torch

from archsearch.errors import ConfigError
from archsearch.gates import create_gate
from archsearch.gates.diffprune import DiffPruneGate


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def set_param(param: torch.nn.Parameter, values: list[float]) -> None:
    with torch.no_grad():
        param.copy_(torch.tensor(values, dtype=param.dtype))


# -- hard concrete ---------------------------------------------------------------------------


def test_hard_concrete_keep_probability_at_zero_log_alpha():
    gate = create_gate("hard_concrete", 2)
    set_param(gate.log_alpha, [0.0, 0.0])
    expected = sigmoid(-(2.0 / 3.0) * math.log(0.1 / 1.1))
    assert expected == pytest.approx(0.8318, abs=1e-4)
    assert gate.keep_probability().tolist() == pytest.approx([expected] * 2, abs=1e-6)


def test_hard_concrete_init_mean_and_spread():
    torch.manual_seed(0)
    gate = create_gate("hard_concrete", 20000, init_drop_rate=0.2)
    assert gate.log_alpha.mean().item() == pytest.approx(math.log(4.0), abs=1e-3)
    assert gate.log_alpha.std().item() == pytest.approx(0.01, rel=0.05)


def test_hard_concrete_sample_hits_zero_and_one_at_the_right_rates():
    # P(z = 0) = 1 - sigmoid(la - beta log(-gamma / zeta)); P(z = 1) = sigmoid(la - beta log 11)
    torch.manual_seed(0)
    n, la = 40000, 0.7
    gate = create_gate("hard_concrete", n)
    set_param(gate.log_alpha, [la] * n)
    z = gate.train()()
    beta = 2.0 / 3.0
    assert (z == 0).double().mean().item() == pytest.approx(
        1 - sigmoid(la - beta * math.log(0.1 / 1.1)), abs=0.01
    )
    assert (z == 1).double().mean().item() == pytest.approx(
        sigmoid(la - beta * math.log(11.0)), abs=0.01
    )
    assert ((z > 0) & (z < 1)).any()


def test_hard_concrete_one_noise_per_call():
    torch.manual_seed(0)
    gate = create_gate("hard_concrete", 8).train()
    assert not torch.equal(gate(), gate())


def test_hard_concrete_eval_z_hat():
    gate = create_gate("hard_concrete", 5)
    values = [-3.0, -2.3, 0.0, 1.0, 3.0]
    set_param(gate.log_alpha, values)
    expected = [min(max(sigmoid(v) * 1.2 - 0.1, 0.0), 1.0) for v in values]
    assert expected[0] == 0.0 and expected[-1] == 1.0
    gate.eval()
    assert gate().tolist() == pytest.approx(expected, abs=1e-6)
    assert gate.hard_mask().tolist() == [e > 0 for e in expected]
    assert gate.test_scale().tolist() == pytest.approx(expected, abs=1e-6)


def test_hard_concrete_clamps_log_alpha_after_step():
    gate = create_gate("hard_concrete", 3)
    set_param(gate.log_alpha, [-10.0, 0.5, 10.0])
    gate.after_optimizer_step()
    assert gate.log_alpha.tolist() == pytest.approx([math.log(1e-2), 0.5, math.log(1e2)])


def test_bad_init_drop_rate_is_a_config_error():
    for name in ("hard_concrete", "arm", "gumbel_softmax", "diffprune"):
        with pytest.raises(ConfigError, match="init_drop_rate"):
            create_gate(name, 3, init_drop_rate=1.0)


# -- ARM -------------------------------------------------------------------------------------


def arm_with_pi(pis: list[float], **options) -> torch.nn.Module:
    gate = create_gate("arm", len(pis), **options)
    k = options.get("k", 7.0)
    if options.get("hard_sigmoid"):
        set_param(gate.phi, [(p - 0.5) * 7.0 / k for p in pis])
    else:
        set_param(gate.phi, [logit(p) / k for p in pis])
    return gate


def test_arm_init():
    torch.manual_seed(0)
    gate = create_gate("arm", 20000, init_drop_rate=0.2)
    assert gate.phi.mean().item() == pytest.approx(logit(0.8) / 7, abs=1e-4)
    assert gate.keep_probability().mean().item() == pytest.approx(0.8, abs=1e-3)


def test_arm_keep_probability_and_its_gradient():
    gate = arm_with_pi([0.2, 0.5, 0.9])
    pi = gate.keep_probability()
    assert pi.tolist() == pytest.approx([0.2, 0.5, 0.9], abs=1e-6)
    pi.sum().backward()
    expected = [7 * p * (1 - p) for p in (0.2, 0.5, 0.9)]
    assert gate.phi.grad.tolist() == pytest.approx(expected, abs=1e-5)


def test_arm_hard_sigmoid_keep_probability():
    gate = create_gate("arm", 4, hard_sigmoid=True, k=3.5)
    set_param(gate.phi, [-2.0, -0.2, 0.4, 2.0])
    expected = [min(max(3.5 * v / 7 + 0.5, 0.0), 1.0) for v in (-2.0, -0.2, 0.4, 2.0)]
    assert gate.keep_probability().tolist() == pytest.approx(expected, abs=1e-6)
    assert gate.hard_mask().tolist() == [False, False, True, True]


def test_arm_sample_is_exactly_binary_at_rate_pi():
    torch.manual_seed(0)
    n = 40000
    gate = arm_with_pi([0.3] * n).train()
    z = gate()
    assert set(z.unique().tolist()) == {0.0, 1.0}
    assert z.requires_grad is False
    assert z.mean().item() == pytest.approx(0.3, abs=0.01)


def test_arm_antithetic_sample_reuses_the_noise():
    torch.manual_seed(0)
    n = 40000
    gate = arm_with_pi([0.3] * (n // 2) + [0.8] * (n // 2)).train()
    z = gate()
    gate.begin_antithetic()
    anti = gate()
    again = gate()
    gate.end_antithetic()
    assert torch.equal(anti, again)  # no new noise in the antithetic pass
    low, high = slice(0, n // 2), slice(n // 2, n)
    # z = 1[u < pi], anti = 1[u > 1 - pi]: never both 1 when pi < 1/2, never both 0 above.
    assert not ((z[low] == 1) & (anti[low] == 1)).any()
    assert not ((z[high] == 0) & (anti[high] == 0)).any()
    assert anti[low].mean().item() == pytest.approx(0.3, abs=0.015)
    assert anti[high].mean().item() == pytest.approx(0.8, abs=0.015)
    assert not torch.equal(gate(), z)  # back to fresh noise


def test_arm_antithetic_needs_a_main_pass_first():
    gate = create_gate("arm", 3)
    with pytest.raises(RuntimeError, match="forward"):
        gate.begin_antithetic()


def test_arm_two_pass_gradient_adds_to_existing_grad():
    torch.manual_seed(0)
    gate = arm_with_pi([0.4, 0.6]).train()
    gate()
    gate.add_two_pass_gradient(1.0, 3.0)
    first = gate.phi.grad.clone()
    gate.add_two_pass_gradient(1.0, 3.0)
    assert torch.equal(gate.phi.grad, 2 * first)
    assert (first != 0).all()


@pytest.mark.parametrize("hard_sigmoid", [False, True])
def test_arm_estimator_is_unbiased(hard_sigmoid):
    # f(z) = sum (z - t)^2, so E f = sum pi (1 - t)^2 + (1 - pi) t^2 and dE/dpi = 1 - 2t.
    torch.manual_seed(0)
    pis, t = [0.2, 0.5, 0.9], torch.tensor([0.3, 0.8, 0.1])
    gate = arm_with_pi(pis, hard_sigmoid=hard_sigmoid).train()
    # dpi/dphi: k / 7 = 1 on the hard sigmoid's slope, k pi (1 - pi) on the sigmoid
    dpi_dphi = [1.0] * 3 if hard_sigmoid else [7 * p * (1 - p) for p in pis]
    exact = torch.tensor([(1 - 2 * ti) * d for ti, d in zip(t.tolist(), dpi_dphi, strict=True)])
    estimates = []
    for _ in range(4000):
        gate.phi.grad = None
        loss = ((gate() - t) ** 2).sum().item()
        gate.begin_antithetic()
        antithetic_loss = ((gate() - t) ** 2).sum().item()
        gate.end_antithetic()
        gate.add_two_pass_gradient(loss, antithetic_loss)
        estimates.append(gate.phi.grad.clone())
    estimates = torch.stack(estimates)
    mean = estimates.mean(0)
    standard_error = estimates.std(0) / math.sqrt(len(estimates))
    assert (standard_error < 0.1).all()
    assert ((mean - exact).abs() < 4 * standard_error + 1e-3).all(), (mean, exact)


# -- Gumbel-Softmax --------------------------------------------------------------------------


def test_gumbel_tau_schedule_is_exponential():
    gate = create_gate("gumbel_softmax", 3)
    for progress, expected in [(0.0, 1.0), (0.5, math.sqrt(0.1)), (1.0, 0.1)]:
        gate.set_progress(progress)
        assert gate.tau.item() == pytest.approx(expected, rel=1e-6)
    gate = create_gate("gumbel_softmax", 3, tau0=2.0, tau_min=0.5)
    gate.set_progress(0.5)
    assert gate.tau.item() == pytest.approx(1.0, rel=1e-6)


def test_gumbel_training_forward_binary_with_straight_through_gradient():
    torch.manual_seed(0)
    n, theta = 40000, 1.0
    # float64 so that y (1 - y) underflows only far out in the noise's tails
    gate = create_gate("gumbel_softmax", n).double()
    set_param(gate.theta, [theta] * n)
    gate.set_progress(0.5)
    tau = gate.tau.item()
    z = gate.train()()
    assert set(z.unique().tolist()) == {0.0, 1.0}
    # theta + g1 - g2 is logistic around theta, so P(z = 1) = sigmoid(theta).
    assert z.mean().item() == pytest.approx(sigmoid(theta), abs=0.01)
    z.sum().backward()
    grad = gate.theta.grad
    # d/dtheta sigmoid((theta + g) / tau) = y (1 - y) / tau, in (0, 1 / (4 tau)].
    assert (grad >= 0).all()
    assert (grad > 0).double().mean().item() > 0.999
    assert (grad <= 1 / (4 * tau) + 1e-6).all()
    assert grad.max().item() == pytest.approx(1 / (4 * tau), rel=1e-3)


def test_gumbel_eval_and_keep_map():
    gate = create_gate("gumbel_softmax", 3)
    set_param(gate.theta, [-1.0, 0.0, 2.0])
    assert gate.keep_probability().tolist() == pytest.approx([sigmoid(-1), 0.5, sigmoid(2)])
    assert gate.hard_mask().tolist() == [False, False, True]
    keep_map = gate.keep_map()
    assert keep_map.dtype == torch.float32
    assert keep_map.tolist() == [0.0, 0.0, 1.0]
    assert gate.eval()().tolist() == [0.0, 0.0, 1.0]


# -- trainable gate --------------------------------------------------------------------------


def test_trainable_gate_step_forward_with_unit_gradient():
    gate = create_gate("trainable_gate", 4)
    set_param(gate.w, [-1.0, -1e-3, 0.0, 0.3])
    z = gate.train()()
    assert z.tolist() == [0.0, 0.0, 1.0, 1.0]
    z.sum().backward()
    assert gate.w.grad.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert gate.hard_mask().tolist() == [False, False, True, True]


def test_trainable_gate_sigmoid_gradient_shape():
    gate = create_gate("trainable_gate", 3, gradient_shape="sigmoid")
    values = [-0.5, 0.0, 1.0]
    set_param(gate.w, values)
    z = gate.train()()
    assert z.tolist() == [0.0, 1.0, 1.0]
    z.sum().backward()
    expected = [4 * sigmoid(4 * v) * (1 - sigmoid(4 * v)) for v in values]
    assert expected[1] == 1.0
    assert gate.w.grad.tolist() == pytest.approx(expected, abs=1e-6)


def test_trainable_gate_keep_probability_is_z():
    gate = create_gate("trainable_gate", 3)
    set_param(gate.w, [-0.2, 0.1, 0.4])
    keep = gate.keep_probability()
    assert keep.tolist() == [0.0, 1.0, 1.0]
    keep.sum().backward()
    assert gate.w.grad.tolist() == [1.0, 1.0, 1.0]


def test_trainable_gates_start_open():
    torch.manual_seed(0)
    gate = create_gate("trainable_gate", 1000)
    assert gate.hard_mask().all()
    assert (gate.train()() == 1).all()
    assert gate.w.mean().item() == pytest.approx(0.5, abs=0.01)


def test_trainable_gate_rejects_unknown_shape():
    with pytest.raises(ConfigError, match="gradient_shape"):
        create_gate("trainable_gate", 3, gradient_shape="cosine")


# -- learned threshold -----------------------------------------------------------------------


def test_learned_threshold_soft_and_hard_masks():
    scores = torch.tensor([0.1, 0.2, 0.5, 1.2])
    gate = create_gate("learned_threshold", 4)
    gate.calibrate(scores)
    set_param(gate.relative_tau, 0.3 / gate.score_scale.item())
    temperature = 0.1 * (0.1 + 0.2 + 0.5 + 1.2) / 4
    expected = [sigmoid((s - 0.3) / temperature) for s in scores.tolist()]
    assert gate.train()(scores).tolist() == pytest.approx(expected, abs=1e-6)
    assert gate.keep_probability(scores).tolist() == pytest.approx(expected, abs=1e-6)
    assert gate.hard_mask(scores).tolist() == [False, False, True, True]
    assert gate.eval()(scores).tolist() == [0.0, 0.0, 1.0, 1.0]


def test_learned_threshold_starts_keeping_everything():
    scores = torch.rand(10) + 0.1
    gate = create_gate("learned_threshold", 10)
    gate.calibrate(scores)
    assert gate.tau.item() == 0.0
    assert gate.hard_mask(scores).all()


def test_learned_threshold_gradient_reaches_tau_and_scores():
    scores = torch.tensor([0.1, 0.2, 0.5, 1.2], requires_grad=True)
    gate = create_gate("learned_threshold", 4)
    gate.calibrate(scores)
    scale = gate.score_scale.item()
    set_param(gate.relative_tau, 0.3 / scale)
    mask = gate.keep_probability(scores)
    mask.sum().backward()
    temperature = gate.temperature.item()
    slope = mask.detach() * (1 - mask.detach()) / temperature
    # tau = relative_tau * scale, so the chain rule multiplies by the scale
    assert gate.relative_tau.grad.item() == pytest.approx(-scale * slope.sum().item(), rel=1e-5)
    assert scores.grad.tolist() == pytest.approx(slope.tolist(), rel=1e-5)


def test_learned_threshold_tau_kept_nonnegative():
    gate = create_gate("learned_threshold", 2)
    set_param(gate.relative_tau, -0.4)
    gate.after_optimizer_step()
    assert gate.relative_tau.item() == 0.0
    set_param(gate.relative_tau, 0.4)
    gate.after_optimizer_step()
    assert gate.relative_tau.item() == pytest.approx(0.4)


def test_learned_threshold_temperature_anneals_with_the_score_scale():
    scores = torch.tensor([0.5, 1.5])
    gate = create_gate("learned_threshold", 2)
    gate.calibrate(scores)
    for progress, fraction in [(0.0, 0.1), (0.5, math.sqrt(0.1 * 0.01)), (1.0, 0.01)]:
        gate.set_progress(progress)
        assert gate.temperature.item() == pytest.approx(fraction * 1.0, rel=1e-6)
    # Calibrating again keeps the schedule position and is idempotent.
    gate.calibrate(scores)
    gate.calibrate(scores)
    assert gate.temperature.item() == pytest.approx(0.01, rel=1e-6)


def test_learned_threshold_calibrates_lazily():
    scores = torch.rand(6) + 0.1
    eager = create_gate("learned_threshold", 6)
    eager.calibrate(scores)
    lazy = create_gate("learned_threshold", 6)
    assert torch.equal(lazy.keep_probability(scores), eager.keep_probability(scores))
    assert lazy.score_scale.item() == pytest.approx(scores.mean().item())


def test_learned_threshold_needs_scores():
    gate = create_gate("learned_threshold", 3)
    with pytest.raises(ValueError, match="scores"):
        gate.keep_probability()
    with pytest.raises(ValueError, match="shape"):
        gate.keep_probability(torch.rand(4))


# -- DiffPrune -------------------------------------------------------------------------------


def diffprune_z(x: float, tau: float) -> float:
    return min(max(1.2 * sigmoid(x / tau) - 0.1, 0.0), 1.0)


def test_diffprune_transform_and_keep_probability():
    gate = create_gate("diffprune", 5, stochastic=False)
    values = [-3.0, -1.0, 0.0, 1.0, 3.0]
    set_param(gate.x, values)
    expected = [diffprune_z(v, 1.0) for v in values]
    assert expected[0] == 0.0 and expected[-1] == 1.0
    assert gate.train()().tolist() == pytest.approx(expected, abs=1e-6)
    assert gate.eval()().tolist() == pytest.approx(expected, abs=1e-6)
    assert gate.hard_mask().tolist() == [False, True, True, True, True]
    x0 = logit(0.1 / 1.2)
    assert gate.keep_probability().tolist() == pytest.approx(
        [sigmoid(v - x0) for v in values], abs=1e-6
    )


def test_diffprune_exact_zeros_at_and_below_x0():
    gate = create_gate("diffprune", 4, stochastic=False)
    gate.set_progress(0.5)
    tau = gate.tau.item()
    assert tau == pytest.approx(math.sqrt(0.05), rel=1e-6)
    x0 = tau * logit(0.1 / 1.2)
    set_param(gate.x, [x0 - 1.0, x0 - 1e-4, x0 - 1e-6, x0 + 1e-3])
    z = gate.train()()
    assert z[:3].tolist() == [0.0, 0.0, 0.0]
    assert z[3].item() > 0
    assert gate.hard_mask().tolist() == [False, False, False, True]
    assert gate.keep_probability()[2].item() == pytest.approx(0.5, abs=1e-5)


def test_diffprune_zero_exactly_at_x0_for_every_tau():
    # Rounding in the stretched sigmoid leaves z a sliver above 0 at x0 for some tau.
    gate = create_gate("diffprune", 1, stochastic=False)
    for progress in torch.linspace(0, 1, 1001).tolist():
        gate.set_progress(progress)
        with torch.no_grad():
            gate.x.copy_(gate.tau * math.log(0.1 / 1.1))  # x0 in the gate's own precision
        assert gate.train()().item() == 0.0, progress
        assert not gate.hard_mask().item()


def test_diffprune_tau_anneal():
    gate = create_gate("diffprune", 3)
    for progress, expected in [(0.0, 1.0), (0.5, math.sqrt(0.05)), (1.0, 0.05)]:
        gate.set_progress(progress)
        assert gate.tau.item() == pytest.approx(expected, rel=1e-6)


def test_diffprune_init_starts_inside_the_band():
    gate = create_gate("diffprune", 3, init_drop_rate=0.2, stochastic=False)
    expected = 1.2 * 0.8 - 0.1
    assert gate.train()().tolist() == pytest.approx([expected] * 3, abs=1e-6)


def test_diffprune_stochastic_mode_noises_training_only():
    torch.manual_seed(0)
    gate = create_gate("diffprune", 2000, stochastic=True, sigma=0.5)
    deterministic = diffprune_z(0.0, 1.0)
    z = gate.train()()
    assert not torch.allclose(z, torch.full_like(z, deterministic))
    # x~ = x + 0.5 N(0, 1) at x = 0: E[z] is close to the noiseless 0.5 by symmetry.
    assert z.mean().item() == pytest.approx(deterministic, abs=0.02)
    assert gate.eval()().tolist() == pytest.approx([deterministic] * 2000, abs=1e-6)


def test_diffprune_docstring_calls_the_transform_an_interpretation():
    assert "interpretation" in DiffPruneGate.__doc__.lower()
