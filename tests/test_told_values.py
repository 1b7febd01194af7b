"""The sampler is told a finished trial's costs on the yardstick's log scale (``told_values``),
so Optuna weighs a front as the project's hypervolume does; MLflow keeps the raw values."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import tiny_space, write_space

from archsearch.hypervolume import log_cost
from archsearch.search.searcher import StudySearch, told_values
from archsearch.space import load_spec

OBJECTIVES = {"val_accuracy": "max", "flops": "min"}


def test_costs_are_told_as_the_yardsticks_coordinate_and_the_rest_as_they_are() -> None:
    result = {"val_accuracy": 0.85, "flops": 2662.0, "flops_ratio": 0.01, "params_ratio": 0.3}
    told = told_values(result, OBJECTIVES)
    assert told["flops"] == pytest.approx(1 / 3)  # log10(0.01) is a third up from -3 to 0
    assert told["val_accuracy"] == 0.85 and told["params_ratio"] == 0.3
    assert result["flops"] == 2662.0  # the caller's result is not changed
    # a thousandth of the dense cost or less is the box's edge, a dead network included
    assert told_values({**result, "flops_ratio": 0.0}, OBJECTIVES)["flops"] == 0.0
    assert told_values({**result, "flops_ratio": 1e-5}, OBJECTIVES)["flops"] == 0.0
    # no ratio (a result from elsewhere), or not a number: the raw value stays
    assert told_values({"val_accuracy": 0.8, "flops": 5.0}, OBJECTIVES)["flops"] == 5.0
    nan = told_values({**result, "flops_ratio": math.nan}, OBJECTIVES)
    assert nan["flops"] == 2662.0


def test_the_study_holds_log_costs_and_the_same_front(tmp_path: Path) -> None:
    """Log is monotone: the study's Pareto front is the front of the raw values, but the
    distances along the cost axis are the yardstick's (0.1% and 0.3% apart as 40% and 120%)."""
    searcher = StudySearch(load_spec(write_space(tmp_path, tiny_space())))
    rows = {
        "dear": {"val_accuracy": 0.90, "flops": 600.0, "flops_ratio": 0.6},
        "middle": {"val_accuracy": 0.88, "flops": 50.0, "flops_ratio": 0.05},
        "cheap": {"val_accuracy": 0.85, "flops": 2.0, "flops_ratio": 0.002},
        "beaten": {"val_accuracy": 0.84, "flops": 60.0, "flops_ratio": 0.06},
    }
    for trial_id in rows:
        searcher.suggest(trial_id)
    for trial_id, row in rows.items():
        searcher.on_trial_complete(trial_id, result=row)
    told = {t.number: t.values for t in searcher.study.trials}
    for number, row in enumerate(rows.values()):
        assert told[number] == pytest.approx([row["val_accuracy"], log_cost(row["flops_ratio"])])
    assert sorted(t.number for t in searcher.study.best_trials) == [0, 1, 2]
