"""Learning-rate schedules, weight decay and a fine-tuning rate of its own: each phase of a
trial runs its schedule over its own steps, and the history shows the rate it ended at."""

from __future__ import annotations

import pytest
import torch

from archsearch.config import TrialConfig
from archsearch.errors import ConfigError
from archsearch.schedules import lr_factor
from archsearch.trial import run_trial


def test_a_constant_schedule_never_moves() -> None:
    assert {lr_factor("constant", s, 100) for s in range(100)} == {1.0}


def test_cosine_runs_from_the_full_rate_to_zero_over_the_phase() -> None:
    assert lr_factor("cosine", 0, 101) == pytest.approx(1.0)
    assert lr_factor("cosine", 50, 101) == pytest.approx(0.5)
    assert lr_factor("cosine", 100, 101) == pytest.approx(0.0, abs=1e-12)
    rates = [lr_factor("cosine", s, 101) for s in range(101)]
    assert rates == sorted(rates, reverse=True)


def test_step_falls_tenfold_at_half_and_three_quarters() -> None:
    assert [lr_factor("step", s, 101) for s in (0, 49, 50, 74, 75, 100)] == pytest.approx(
        [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]
    )


def test_warm_up_ramps_to_the_full_rate_then_the_schedule_starts() -> None:
    ramp = [lr_factor("cosine", s, 110, warmup_steps=10) for s in range(10)]
    assert ramp == sorted(ramp) and ramp[0] == pytest.approx(1 / 11) and ramp[-1] < 1
    assert lr_factor("cosine", 10, 110, warmup_steps=10) == pytest.approx(1.0)
    assert lr_factor("cosine", 109, 110, warmup_steps=10) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr_schedule", "linear", "expected constant or cosine or step"),
        ("weight_decay", -0.1, "expected a number >= 0"),
        ("finetune_lr", 0.0, "expected a number > 0"),
        ("finetune_lr_schedule", "linear", "expected constant or cosine or step"),
        ("lr_warmup_epochs", -1, "expected an integer >= 0"),
    ],
)
def test_bad_schedule_settings_name_the_key(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field} = .* is invalid: {message}"):
        TrialConfig(**{field: value})


def _trial(**fields) -> list[dict]:
    config = TrialConfig(
        model="mlp",
        model_options={"hidden": [16]},
        data="digits",
        gate="hard_concrete",
        granularity="neuron",
        epochs=2,
        finetune_epochs=2,
        batch_size=64,
        latency_runtime="off",
        **fields,
    )
    return run_trial(config)


def _rates(history: list[dict], phase: str) -> list[float]:
    return [record["lr"] for record in history if record["phase"] == phase]


def test_each_phase_ends_its_own_cosine_near_zero_and_fine_tunes_at_its_own_rate() -> None:
    history = _trial(lr=1e-2, lr_schedule="cosine", finetune_lr=1e-3).history
    gated, finetune = _rates(history, "gated"), _rates(history, "finetune")
    assert gated[0] < 1e-2 and gated[-1] < 1e-4  # the gated phase's cosine, ended
    assert finetune[0] < 1e-3 and finetune[-1] < 1e-5  # its own rate, its own cosine
    constant = _trial(lr=1e-2).history
    assert set(_rates(constant, "gated")) == {1e-2} and set(_rates(constant, "finetune")) == {1e-2}


def test_fine_tuning_may_anneal_while_the_gated_phase_keeps_its_constant_rate() -> None:
    history = _trial(lr=1e-2, finetune_lr_schedule="cosine").history
    assert set(_rates(history, "gated")) == {1e-2}
    finetune = _rates(history, "finetune")
    assert finetune == sorted(finetune, reverse=True) and finetune[-1] < 1e-4


def test_weight_decay_shrinks_the_weights() -> None:
    def norm(result) -> float:
        return sum(float(p.detach().pow(2).sum()) for p in result.model.parameters())

    # decoupled: each step multiplies the weights by 1 - lr * weight_decay = 0.99
    plain, decayed = _trial(lr=1e-2), _trial(lr=1e-2, weight_decay=1.0)
    assert norm(decayed) < 0.8 * norm(plain)
    assert torch.isfinite(torch.tensor(decayed.metrics["val_accuracy"]))


def test_a_space_searches_the_schedule_and_checks_it(tmp_path) -> None:
    from conftest import space_error, tiny_space, write_space

    from archsearch.space import load_spec

    space = tiny_space()["space"] | {
        "lr_schedule": ["constant", "cosine"],
        "weight_decay": {"loguniform": [1e-5, 1e-2]},
        "finetune_lr_schedule": ["constant", "cosine"],
    }
    spec = load_spec(write_space(tmp_path, tiny_space(space=space)))
    config = spec.trial_config(
        {
            "gate": "arm",
            "lr_schedule": "cosine",
            "weight_decay": 1e-3,
            "finetune_lr_schedule": "cosine",
        }
    )
    assert (config.lr_schedule, config.weight_decay) == ("cosine", 1e-3)
    assert config.finetune_lr_schedule == "cosine"
    for key in ("lr_schedule", "finetune_lr_schedule"):
        bad = tiny_space(space=tiny_space()["space"] | {key: ["cosine", "linear"]})
        assert f"space.{key}: " in space_error(tmp_path, bad)
