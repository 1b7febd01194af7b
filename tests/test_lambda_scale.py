"""One lambda, without a target, moves every gate about as far (issue 13, item 3).

A search samples ``penalty.lambda`` from one range for every gate method, but a plain
``lambda * cost`` moves the methods by different amounts (benchmarks/RESULTS.md, "One lambda
across gates"). So each method owns a factor on lambda for units and one for single weights
(``Gate.unit_lambda_scale``, ``Gate.weight_lambda_scale``), fitted on the trained
LeNet-300-100, and the same lambda lands it near the others. ARM keeps none: its pull against
its estimator's noise depends on the model.
"""

from __future__ import annotations

import pytest
from test_gate_targets import TINY

from archsearch.config import TrialConfig
from archsearch.gates import get_gate_info, list_gates
from archsearch.models import create_model
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups
from archsearch.trial import load_data, run_trial

SCALED = [name for name in list_gates() if name != "arm"]


def _gated(gate: str, granularity: str) -> GatedModel:
    model = create_model("mlp", input_shape=(8,), num_classes=3, hidden=[16])
    return GatedModel(model, find_groups(model, (8,), granularity), gate)


@pytest.mark.parametrize("gate", list_gates())
def test_each_gate_owns_its_factors_and_a_target_takes_none(gate: str) -> None:
    method = get_gate_info(gate).cls
    for granularity, factor in [
        ("neuron", method.unit_lambda_scale),
        ("weight", method.weight_lambda_scale),
    ]:
        gated = _gated(gate, granularity)
        own = method.penalty_scale(sum(g.n for g in gated.gate_list))
        assert gated.penalty_scale(targeted=False) == pytest.approx(own * factor)
        # a target's penalty is relative, and every gate reaches its band with lambda 1 there
        assert gated.penalty_scale(targeted=True) == pytest.approx(own)
    if gate == "arm":
        assert method.unit_lambda_scale == method.weight_lambda_scale == 1.0


@pytest.mark.parametrize("gate", list_gates())
def test_a_units_gates_take_their_own_rate_where_the_method_sets_one(gate: str) -> None:
    """learned_threshold's one threshold per layer passed every channel of a 20-channel
    convolution within an epoch at the rate that single weights need (Gate.unit_lr_scale)."""
    method = get_gate_info(gate).cls
    assert _gated(gate, "weight").gate_lr_scale == method.lr_scale
    assert _gated(gate, "neuron").gate_lr_scale == (method.unit_lr_scale or method.lr_scale)
    if gate == "learned_threshold":
        assert _gated(gate, "neuron").gate_lr_scale < _gated(gate, "weight").gate_lr_scale


@pytest.fixture(scope="module")
def digits():
    return load_data(TrialConfig(**TINY))


@pytest.mark.parametrize("granularity", ["neuron", "weight"])
def test_one_lambda_lands_every_scaled_gate_near_hard_concrete(digits, granularity) -> None:
    """lambda = 1, no target, on the tests' digits MLP: without the factors
    learned_threshold closed its neurons and gumbel_softmax its weights to 1-2% of the FLOPs
    (chance accuracy and 54%) where hard_concrete kept 56% and 47%."""

    def run(gate: str) -> dict:
        config = TrialConfig(**{**TINY, "penalty_lambda": 1.0}, gate=gate, granularity=granularity)
        return run_trial(config, data=digits).metrics

    reference = run("hard_concrete")
    for gate in SCALED:
        metrics = run(gate) if gate != "hard_concrete" else reference
        assert metrics["val_accuracy"] >= 0.8, (gate, metrics)
        assert 0.1 <= metrics["flops_ratio"] / reference["flops_ratio"] <= 10, (gate, metrics)
