"""The fused gate math (archsearch.gates.fused) against the eager formulas.

Same random state, same parameters: the fused masked weight and keep probability must equal
``weight * sample()`` and ``keep_probability()`` in value, and give the weight and every gate
parameter the same gradient, for every gate (and its options) in both the compiled and the
op-by-op form; inside a gated model at weight and neuron granularity, one training step's
loss and gradients must not change either. Where compilation fails, gates fall back to the
eager formulas with one warning line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import torch

from archsearch.gates import create_gate, fused, get_gate_info
from archsearch.gates.hard_concrete import KEEP_SHIFT
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry

#: a weight just large enough to take the fused path
SHAPE = (64, fused.MIN_GROUPS // 64 + 16)

#: (gate, options, progress): every formula variant the fused path has
CASES = [
    ("hard_concrete", {}, 0.0),
    ("arm", {}, 0.0),
    ("arm", {"hard_sigmoid": True, "k": 3.5}, 0.0),
    ("gumbel_softmax", {}, 0.5),
    ("trainable_gate", {}, 0.0),
    ("trainable_gate", {"gradient_shape": "sigmoid"}, 0.0),
    ("learned_threshold", {}, 0.3),
    ("learned_threshold", {}, 1.0),  # the final temperature: masks cut to exact zeros
    ("diffprune", {}, 0.4),
    ("diffprune", {"stochastic": False}, 0.4),
    ("diffprune", {"sigma": 0.3}, 0.4),
]
IDS = [f"{name}-{'-'.join(map(str, o.values()))}-{p}" for name, o, p in CASES]


@pytest.fixture(autouse=True)
def restore_mode() -> Iterator[None]:
    before = fused.mode()
    yield
    fused.set_mode(before)


def spread_parameters(gate: torch.nn.Module, weight: torch.Tensor) -> None:
    """Parameters over the whole range the formulas branch on: clamped at 0 and at 1, in
    between, below and above the diffprune cut, either side of the step."""
    with torch.no_grad():
        for name, p in gate.named_parameters():
            if name == "relative_tau":  # a threshold inside the scores' range
                p.fill_(0.8)
            else:
                p.copy_(torch.randn_like(p) * 2.0)
    if gate.needs_scores:
        gate.calibrate(weight.detach().pow(2).flatten())


def gate_and_weight(name: str, options: dict, progress: float, device: str = "cpu"):
    torch.manual_seed(0)
    weight = torch.randn(SHAPE).to(device).requires_grad_()
    gate = create_gate(name, weight.numel(), **options).to(device).train()
    spread_parameters(gate, weight)
    gate.set_progress(progress)
    return gate, weight


def step(gate, weight: torch.Tensor, mode: str, seed: int = 1) -> dict[str, torch.Tensor]:
    """Masked weight and keep probability from one seed, then the gradients of a loss on
    both that is not constant in either (the undecided term p (1 - p) included)."""
    fused.set_mode(mode)
    weight.grad = None
    gate.zero_grad(set_to_none=True)
    scores = weight.pow(2).flatten() if gate.needs_scores else None
    torch.manual_seed(seed)
    masked = gate.masked_weight(weight, scores)
    keep = gate.keep_probability(scores)
    upstream = torch.randn(weight.shape, generator=torch.Generator().manual_seed(7))
    upstream = upstream.to(weight.device)
    loss = (masked * upstream).sum() + keep.sum() + 3.0 * (keep * (1.0 - keep)).sum()
    loss.backward()
    out = {"masked": masked.detach(), "keep": keep.detach(), "weight.grad": weight.grad}
    for pname, p in gate.named_parameters():
        out[f"{pname}.grad"] = p.grad if p.grad is not None else torch.zeros_like(p)
    out["fused"] = torch.tensor("MaskedWeight" in type(masked.grad_fn).__name__)
    return out


@pytest.mark.parametrize(("name", "options", "progress"), CASES, ids=IDS)
@pytest.mark.parametrize(
    ("mode", "device"),
    [
        ("compile", "cpu"),
        ("eager", "cpu"),
        pytest.param(
            "compile",
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
        ),
    ],
)
def test_fused_values_and_gradients_equal_the_formulas(name, options, progress, mode, device):
    gate, weight = gate_and_weight(name, options, progress, device)
    reference = step(gate, weight, "off")
    fused_result = step(gate, weight, mode)
    assert not reference.pop("fused") and fused_result.pop("fused")
    assert set(reference) == set(fused_result)
    for key, expected in reference.items():
        # a gradient of a parameter shared by every weight (learned_threshold's tau) is a sum
        # of SHAPE's elements, which the compiled kernel adds in another order: float32 then
        # differs by a few ulps per term (2.7e-6 relative seen on one machine), not by a bug
        rtol = 1e-5 if expected.numel() == 1 and key.endswith(".grad") else None
        torch.testing.assert_close(
            fused_result[key],
            expected,
            rtol=rtol,
            atol=None if rtol is None else 1e-5,
            msg=lambda m, k=key: f"{k}: {m}",
        )
    # the noise is the seed's: another seed draws another sample
    if get_gate_info(name).stochastic and options.get("stochastic", True):
        assert not torch.equal(step(gate, weight, mode, seed=2)["masked"], fused_result["masked"])


@pytest.mark.parametrize("hard_sigmoid", [False, True])
def test_arm_antithetic_pass_and_estimate_match(hard_sigmoid):
    """The antithetic pass (no autograd) reuses the main pass's noise, and the two-pass
    estimate adds the same gradient, on both paths."""
    gate, weight = gate_and_weight("arm", {"hard_sigmoid": hard_sigmoid}, 0.0)
    results = {}
    for mode in ("off", "compile"):
        step(gate, weight, mode)
        gate.begin_antithetic()
        with torch.no_grad():
            antithetic = gate.masked_weight(weight)
        gate.end_antithetic()
        gate.add_two_pass_gradient(0.25, 1.5)
        results[mode] = (antithetic, gate.phi.grad.clone())
    torch.testing.assert_close(results["compile"], results["off"])
    assert not torch.equal(results["compile"][0], step(gate, weight, "compile")["masked"])


def test_keep_probability_is_reused_once_and_only_while_current():
    gate, weight = gate_and_weight("hard_concrete", {}, 0.0)
    fused.set_mode("compile")
    gate.masked_weight(weight)
    held = gate.keep_probability()
    assert "MaskedWeight" in type(held.grad_fn).__name__
    again = gate.keep_probability()  # taken once: computed afresh, the same numbers
    assert again.grad_fn is not held.grad_fn
    torch.testing.assert_close(again, held)
    gate.masked_weight(weight)
    with torch.no_grad():
        gate.log_alpha.add_(1.0)  # an optimizer step in between: the held value is stale
    moved = gate.keep_probability()
    assert (moved > held).all()
    torch.testing.assert_close(moved, torch.sigmoid(gate.log_alpha - KEEP_SHIFT))


@pytest.mark.parametrize("mode", ["off", "compile"])
def test_learned_threshold_masks_make_no_denormals(mode):
    """At the final temperature most masks sit far below the threshold; a denormal mask (or
    masked weight) would slow every later operation on it ~100x on x86."""
    gate, weight = gate_and_weight("learned_threshold", {}, 1.0)
    fused.set_mode(mode)
    scores = weight.pow(2).flatten()
    masked = gate.masked_weight(weight, scores)
    tiny = torch.finfo(weight.dtype).tiny
    for values in (masked, gate.keep_probability(scores), gate(scores)):
        values = values.detach()
        assert (values == 0).any()  # far below the threshold: cut to exactly zero
        assert not ((values != 0) & (values.abs() < tiny)).any()


def test_small_gates_and_eval_stay_eager():
    fused.set_mode("compile")
    weight = torch.randn(16, 16, requires_grad=True)
    small = create_gate("hard_concrete", weight.numel()).train()
    assert "MaskedWeight" not in type(small.masked_weight(weight).grad_fn).__name__
    gate, big = gate_and_weight("hard_concrete", {}, 0.0)
    gate.eval()
    torch.testing.assert_close(gate.masked_weight(big), big * gate().view_as(big))


def training_step(granularity: str, gate_name: str, mode: str) -> dict[str, torch.Tensor]:
    """One gated step of an MLP whose first layer takes the fused path at weight granularity
    (the others stay eager): its loss and every parameter's gradient."""
    fused.set_mode(mode)
    torch.manual_seed(0)
    model = create_model("mlp", (fused.MIN_GROUPS // 64,), 10, hidden=[64, 32])
    groups = find_groups(model, (fused.MIN_GROUPS // 64,), granularity)
    gated = GatedModel(model, groups, gate_name).train()
    cost = CostModel(layer_geometry(model, (fused.MIN_GROUPS // 64,)), groups)
    x, y = torch.randn(32, fused.MIN_GROUPS // 64), torch.randint(0, 10, (32,))
    gated.calibrate()
    torch.manual_seed(1)
    loss = torch.nn.functional.cross_entropy(gated(x), y)
    keep = gated.keep_probabilities(gated.last_scores)
    # a large lambda: the normalised penalty's gradients are ~1e-5 per gate otherwise
    penalty = cost.ratio(keep) + cost.ratio({k: p * (1 - p) for k, p in keep.items()})
    loss = loss + 1e4 * penalty
    loss.backward()
    grads = {n: p.grad for n, p in gated.named_parameters() if p.grad is not None}
    return {"loss": loss.detach(), **grads}


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
@pytest.mark.parametrize(
    "gate_name",
    ["hard_concrete", "arm", "gumbel_softmax", "trainable_gate", "learned_threshold", "diffprune"],
)
def test_a_gated_training_step_is_unchanged(granularity, gate_name):
    reference = training_step(granularity, gate_name, "off")
    result = training_step(granularity, gate_name, "compile")
    assert set(result) == set(reference)
    for key, expected in reference.items():
        torch.testing.assert_close(result[key], expected, msg=lambda m, k=key: f"{k}: {m}")


def test_learned_threshold_units_compute_their_soft_mask_once_a_step(monkeypatch):
    """A learned-threshold mask of units is also its keep probability: the step's penalty
    takes the mask its forward computed (one computation per gate, not two), with the very
    loss and gradients of a mask computed afresh."""
    from archsearch.gates.learned_threshold import LearnedThresholdGate

    calls: list[int] = []
    real = LearnedThresholdGate._soft_mask
    monkeypatch.setattr(
        LearnedThresholdGate, "_soft_mask", lambda g, s: (calls.append(1), real(g, s))[1]
    )
    held = training_step("neuron", "learned_threshold", "off")
    gates = len(calls)
    calls.clear()
    monkeypatch.setattr(fused, "recall_keep", lambda gate, scores: None)
    fresh = training_step("neuron", "learned_threshold", "off")
    assert gates == 2 and len(calls) == 2 * gates  # two hidden layers of units
    assert set(held) == set(fresh)
    for key, expected in fresh.items():
        torch.testing.assert_close(held[key], expected, msg=lambda m, k=key: f"{k}: {m}")


@pytest.mark.parametrize(
    ("gate_name", "granularity"),
    [
        ("hard_concrete", "weight"),
        ("learned_threshold", "weight"),
        ("arm", "weight"),
        ("arm", "neuron"),
        ("learned_threshold", "neuron"),
    ],
)
def test_a_step_frees_what_it_held_for_its_penalty(monkeypatch, granularity, gate_name):
    """The keep probability a forward holds for the step's penalty is freed by the next step
    as soon as nothing refers to it, not left to the cycle collector: a reference cycle
    through it kept every step's graph of a LeNet-5-Caffe weight trial alive, until its
    worker held 18.7 GB and Ray's out-of-memory killer ended it, and the search with it."""
    import gc
    import weakref

    from archsearch import train
    from archsearch.config import TrialConfig

    held: list[weakref.ref] = []
    real = fused.remember_keep
    monkeypatch.setattr(
        fused,
        "remember_keep",
        lambda g, keep, *a, **k: (held.append(weakref.ref(keep)), real(g, keep, *a, **k))[1],
    )
    fused.set_mode("eager")
    torch.manual_seed(0)
    width = fused.MIN_GROUPS // 64
    model = create_model("mlp", (width,), 10, hidden=[64, 32])
    groups = find_groups(model, (width,), granularity)
    gated = GatedModel(model, groups, gate_name).train()
    cost = CostModel(layer_geometry(model, (width,)), groups)
    config = TrialConfig(gate=gate_name, granularity=granularity, penalty_lambda=1.0)
    optimizer = train._adam([{"params": list(gated.parameters()), "lr": 1e-3}])
    batch = torch.randn(32, width), torch.randint(0, 10, (32,))
    gated.calibrate()
    gc.disable()  # what reference counting alone frees
    try:
        for _ in range(3):
            train._gated_step(gated, cost, config, optimizer, batch, 0.5)
        alive = [ref for ref in held[:-2] if ref() is not None]
    finally:
        gc.enable()
    assert held, "nothing was held: the test no longer sees the path it guards"
    assert not alive, f"{len(alive)} of {len(held) - 2} held keep probabilities outlived their step"


def test_a_failed_compilation_falls_back_with_one_warning(tmp_path):
    """No working C++ compiler: the first fused call warns once and every gate runs its
    eager formulas, with the numbers of the eager path."""
    script = textwrap.dedent(
        """
        import torch
        from archsearch.gates import create_gate, fused
        results = []
        for mode in ("compile", "off"):
            fused.set_mode(mode)
            for name in ("hard_concrete", "gumbel_softmax", "hard_concrete"):
                torch.manual_seed(0)
                w = torch.randn(64, 300, requires_grad=True)
                gate = create_gate(name, w.numel()).train()
                (gate.masked_weight(w).sum() + gate.keep_probability().sum()).backward()
                results.append(w.grad)
            print(mode, fused.mode())
        for fallen_back, eager in zip(results[:3], results[3:]):
            torch.testing.assert_close(fallen_back, eager)
        """
    )
    env = {
        **os.environ,
        "CXX": str(tmp_path / "no-such-compiler"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["compile", "off", "off", "off"]
    warnings = [line for line in done.stderr.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1, done.stderr[-3000:]
    assert warnings[0].startswith("archsearch: warning: compiling the fused gate math failed")
