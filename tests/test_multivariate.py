"""``sampler.multivariate``: TPE draws the parameters a trial draws together (its gate, its
lambda) from one density, where Optuna's default has one per parameter. Under MOASHA its
gain on ``lenet300_fashion.yaml`` was within one seed's run-to-run spread (benchmarks/RESULTS.md,
"Multivariate TPE"); these tests hold what the option does, not a gain."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from conftest import TRIAL_SPACE, space_error, trial_spec

from archsearch.search.strata import make_searcher

GATES = ["arm", "hard_concrete", "gumbel_softmax", "learned_threshold"]
FOUR_GATES = {
    **TRIAL_SPACE,
    "trials": 60,
    "space": {
        "gate": GATES,
        "granularity": ["weight", "neuron"],
        "penalty.lambda": {"loguniform": [0.001, 10.0]},
        "arm.k": {"uniform": [3.0, 10.0]},
    },
}


def landscape(config: dict[str, Any]) -> dict[str, float]:
    """Cheaper with lambda; ``arm`` keeps its accuracy, the other gates collapse above 0.1."""
    lam = config["penalty.lambda"]
    accurate = config["gate"] == "arm" or lam < 0.1
    return {"val_accuracy": 0.9 if accurate else 0.2, "flops": 100.0 / (1.0 + 100.0 * lam)}


def modelled_together(multivariate: bool, tmp_path: Path) -> set[str]:
    """The parameters TPE draws from one joint density in the trial after 12 told ones."""
    sampler = {"name": "tpe", "seed": 0, "multivariate": multivariate}
    searcher = make_searcher(trial_spec(tmp_path, {**FOUR_GATES, "sampler": sampler}))
    for i in range(12):
        config = searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", landscape(config))
    study = searcher.study
    return set(study.sampler.infer_relative_search_space(study, study.ask()))


def test_a_multivariate_sampler_draws_gate_and_lambda_from_one_density(tmp_path: Path) -> None:
    joint = modelled_together(True, tmp_path)
    assert {"gate", "granularity", "penalty.lambda"} <= joint, joint
    assert modelled_together(False, tmp_path) == set()  # Optuna's default: one per parameter


def test_the_option_is_recorded_only_when_set_so_older_searches_resume(tmp_path: Path) -> None:
    joint = trial_spec(tmp_path, {**FOUR_GATES, "sampler": {"name": "tpe", "multivariate": True}})
    assert joint.multivariate and joint.describe()["sampler.multivariate"] is True
    plain = trial_spec(tmp_path, FOUR_GATES)
    assert not plain.multivariate and "sampler.multivariate" not in plain.describe()


def test_only_tpe_takes_it_and_the_error_is_one_line(tmp_path: Path) -> None:
    error = space_error(
        tmp_path, {**FOUR_GATES, "sampler": {"name": "nsga2", "multivariate": True}}
    )
    expected = "sampler.multivariate: only tpe models parameters jointly, not nsga2"
    assert error == f"{tmp_path / 'space.yaml'}: {expected}", error
    error = space_error(tmp_path, {**FOUR_GATES, "sampler": {"multivariate": "yes"}})
    assert "sampler.multivariate: expected" in error, error


def test_a_restored_multivariate_searcher_goes_on_as_the_saved_one(tmp_path: Path) -> None:
    raw = {**FOUR_GATES, "sampler": {"name": "tpe", "seed": 3, "multivariate": True}}
    searcher = make_searcher(trial_spec(tmp_path, raw))
    for i in range(15):
        config = searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", landscape(config))
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored = make_searcher(trial_spec(tmp_path, raw))
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("t15") == searcher.suggest("t15")
    assert math.isfinite(restored.suggest("t16")["penalty.lambda"])
