"""One trial end to end, through the same function the CLI and the search call."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from archsearch.config import TrialConfig
from archsearch.errors import ConfigError
from archsearch.gates import list_gates
from archsearch.pruning.flops import count_flops
from archsearch.subnetwork import load_subnetwork
from archsearch.trial import load_data, run_trial

SMALL = {
    "model": "mlp",
    "model_options": {"hidden": [64, 32]},
    "data": "digits",
    "epochs": 3,
    "finetune_epochs": 1,
    "batch_size": 64,
}


@pytest.fixture(scope="module")
def digits():
    return load_data(TrialConfig(**SMALL))


def test_trial_writes_what_the_search_reads(tmp_path: Path, digits) -> None:
    config = TrialConfig(**SMALL, gate="arm", granularity="neuron", penalty_lambda=0.05)
    result = run_trial(config, out_dir=tmp_path, data=digits)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "val_accuracy",
        "test_accuracy",
        "flops",
        "flops_ratio",
        "params",
        "params_ratio",
        "train_seconds",
    ):
        assert key in metrics
    assert metrics["val_accuracy"] > 0.5  # ten classes: far above chance
    subnetwork = json.loads((tmp_path / "subnetwork.json").read_text())
    assert subnetwork["flops"]["convention"].startswith("one multiply-accumulate")
    assert subnetwork["flops"]["input_shape"][-3:] == [1, 8, 8]
    assert sum(layer["flops"] for layer in subnetwork["layers"]) <= metrics["flops"]
    widths = [int(w) for w in subnetwork["architecture"].split("-")]
    assert widths[0] == 64 and widths[-1] == 10 and widths[1] <= 64

    history = json.loads((tmp_path / "history.json").read_text())
    assert [r["phase"] for r in history] == ["gated"] * 3 + ["finetune"]

    # the files alone rebuild the subnetwork: same outputs, same FLOPs
    rebuilt = load_subnetwork(tmp_path)
    x = digits.test_x[:32]
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), result.model.eval()(x), atol=1e-5)
    assert count_flops(rebuilt, (1, 8, 8)).total == metrics["flops"]


@pytest.mark.parametrize("gate", list_gates())
def test_lambda_prunes_with_every_gate(gate: str, digits) -> None:
    """A strong penalty must shrink the network, with every method (the point of the tool)."""
    config = TrialConfig(
        **{**SMALL, "epochs": 4}, gate=gate, granularity="neuron", penalty_lambda=2.0, gate_lr=0.05
    )
    metrics = run_trial(config, data=digits).metrics
    assert metrics["flops_ratio"] < 0.9


def test_weight_granularity_keeps_pruned_weights_zero_through_finetuning(digits) -> None:
    config = TrialConfig(
        **SMALL, gate="hard_concrete", granularity="weight", penalty_lambda=0.5, gate_lr=0.05
    )
    result = run_trial(config, data=digits)
    densities = result.subnetwork["densities"]
    assert set(densities) == {"1", "3", "5"}
    assert min(densities.values()) < 0.9
    weight = result.model[1].weight
    assert float((weight != 0).float().mean()) == pytest.approx(densities["1"])
    assert result.metrics["flops"] < result.metrics["dense_flops"]


def test_input_gating_reports_the_kept_features(digits) -> None:
    config = TrialConfig(
        **SMALL,
        gate="gumbel_softmax",
        granularity="neuron",
        gate_inputs=True,
        penalty_lambda=0.5,
        gate_lr=0.05,
    )
    result = run_trial(config, data=digits)
    kept = result.subnetwork["input_features_kept"]
    assert kept is not None and 0 < len(kept) <= 64
    assert result.subnetwork["architecture"].startswith(f"{len(kept)}-")


def test_learned_threshold_warms_up_by_default() -> None:
    assert TrialConfig(gate="learned_threshold").resolved_pretrain_epochs == 1
    assert TrialConfig(gate="arm").resolved_pretrain_epochs == 0
    assert TrialConfig(gate="learned_threshold", pretrain_epochs=0).resolved_pretrain_epochs == 0


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"penalty_lambda": -1}, "penalty_lambda"),
        ({"epochs": 0}, "epochs"),
        ({"val_fraction": 0.9}, "val_fraction"),
        ({"penalty_target": 2}, "penalty_target"),
    ],
)
def test_bad_values_name_their_key(override: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        TrialConfig(**override)


def test_unknown_setting_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="'epoch'"):
        TrialConfig.from_dict({"epoch": 3})


@pytest.mark.parametrize(("gate", "granularity"), [("hard_concrete", "weight"), ("arm", "neuron")])
def test_a_trial_repeats_bit_for_bit(gate: str, granularity: str, digits) -> None:
    """Re-running a front trial must give the front's subnetwork: the same settings and seed
    on the same thread count end at the same weights, not merely similar ones."""
    config = TrialConfig(**SMALL, gate=gate, granularity=granularity, penalty_lambda=0.5)
    first, second = (run_trial(config, data=digits) for _ in range(2))
    for key in ("val_accuracy", "test_accuracy", "flops", "params"):
        assert first.metrics[key] == second.metrics[key], key
    assert first.subnetwork["layers"] == second.subnetwork["layers"]
    weights, again = first.model.state_dict(), second.model.state_dict()
    assert weights.keys() == again.keys()
    for key, value in weights.items():
        assert torch.equal(value, again[key]), key
