"""Constraints (``constraints: {val_accuracy: {min: 0.8}, flops_ratio: {max: 0.5}}``): told to
Optuna's sampler as constraint values so it steers away, and an infeasible trial is logged
FINISHED with ``archsearch.infeasible`` naming what it violates, never on a front.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import mlflow
import optuna
import pytest
from conftest import search_to_end, space_error, tiny_space, write_space

from archsearch import api
from archsearch.constraints import Constraint, constraint_values, violations
from archsearch.dashboard import collect
from archsearch.pareto import non_dominated
from archsearch.search.reports import EPOCH_KEY
from archsearch.search.searcher import StudySearch
from archsearch.space import load_spec
from archsearch.tracking import SearchTracker, front_candidate, front_rows

BOUNDS = (Constraint("val_accuracy", min=0.8), Constraint("flops_ratio", max=0.5))
#: a bound off the objectives, so an infeasible trial can dominate a feasible one
ADMISSIBLE = (Constraint("val_accuracy", min=0.8), Constraint("params_ratio", max=0.5))


def test_constraint_values_follow_optunas_sign_as_shares_of_the_bound() -> None:
    bad = constraint_values({"val_accuracy": 0.6, "flops_ratio": 0.7}, BOUNDS)
    assert bad == pytest.approx({"val_accuracy.min": 0.25, "flops_ratio.max": 0.4})
    good = constraint_values({"val_accuracy": 0.9, "flops_ratio": 0.3}, BOUNDS)
    assert all(value <= 0 for value in good.values())
    assert constraint_values({"flops_ratio": math.nan}, BOUNDS) == {
        "val_accuracy.min": math.inf,
        "flops_ratio.max": math.inf,
    }


def test_violations_name_the_metric_its_value_and_the_bound() -> None:
    assert violations({"val_accuracy": 0.62, "flops_ratio": 0.3}, BOUNDS) == [
        "val_accuracy 0.62 < min 0.8"
    ]
    assert violations({"val_accuracy": 0.9, "flops_ratio": 0.3}, BOUNDS) == []
    both = Constraint("flops_ratio", min=0.01, max=0.5)
    assert both.describe() == "0.01 <= flops_ratio <= 0.5"


@pytest.mark.parametrize(
    ("constraints", "message"),
    [
        ({"test_accuracy": {"min": 0.8}}, "constraints.test_accuracy: unknown key; expected one"),
        ({"val_accuracy": {"min": 80}}, "constraints.val_accuracy.min: expected a fraction"),
        ({"flops_ratio": {"at_most": 0.5}}, "constraints.flops_ratio.at_most: unknown key"),
        ({"flops_ratio": {}}, "constraints.flops_ratio: expected min and/or max"),
        ({"val_accuracy": 0.8}, "constraints.val_accuracy: expected a mapping, got float 0.8"),
        ({"flops": {"min": 10, "max": 5}}, "constraints.flops: expected min <= max"),
    ],
)
def test_bad_constraints_are_one_line(tmp_path: Path, constraints: dict, message: str) -> None:
    error = space_error(tmp_path, tiny_space(constraints=constraints))
    assert error.startswith(f"{tmp_path / 'space.yaml'}: {message}")


def test_constraints_reach_the_optuna_study(tmp_path: Path) -> None:
    """The sampler reads ``FrozenTrial.constraints``: an infeasible trial that dominates
    everything is still not among the study's best, and TPE/NSGA-II rank it behind."""
    constraints = {"val_accuracy": {"min": 0.8}, "params_ratio": {"max": 0.5}}
    spec = load_spec(write_space(tmp_path, tiny_space(constraints=constraints)))
    searcher = StudySearch(spec)
    for trial_id in ("feasible", "infeasible", "stopped"):
        searcher.suggest(trial_id)
    searcher.on_trial_complete(
        "feasible", result={"val_accuracy": 0.85, "flops": 400.0, "params_ratio": 0.4}
    )
    searcher.on_trial_complete(  # more accurate, fewer FLOPs, but 60% of the parameters
        "infeasible", result={"val_accuracy": 0.95, "flops": 300.0, "params_ratio": 0.6}
    )
    rung = {EPOCH_KEY: 1, "val_accuracy": 0.99, "flops": math.nan, "hard_cost_ratio": 0.1}
    searcher.on_trial_complete("stopped", result=rung)
    feasible, infeasible, stopped = searcher.study.trials
    assert all(value <= 0 for value in feasible.constraints.values())
    assert infeasible.constraints["params_ratio.max"] == pytest.approx(0.2)
    assert infeasible.constraints["val_accuracy.min"] < 0
    assert stopped.state == optuna.trial.TrialState.PRUNED and not stopped.constraints
    assert [t.number for t in searcher.study.best_trials] == [feasible.number]


def test_an_infeasible_trial_is_logged_marked_and_kept_off_the_front(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SearchTracker("constrained", tracking_uri=uri, constraints=ADMISSIBLE)
    point = {"gate": "arm", "granularity": "neuron", "penalty.lambda": 1.0}
    ok = tracker.log_trial(
        "t_ok", point, metrics={"val_accuracy": 0.85, "flops": 400.0, "params_ratio": 0.4}
    )
    # dominates the feasible one, but keeps 60% of the parameters where 50% is the limit
    over = tracker.log_trial(
        "t_over", point, metrics={"val_accuracy": 0.95, "flops": 300.0, "params_ratio": 0.6}
    )
    summary = tracker.summary(over)
    assert summary["status"] == "INFEASIBLE" and summary["infeasible"] == 1
    assert summary["finished"] == 2 and summary["front_size"] == 1
    assert summary["violations"] == "params_ratio 0.6 > max 0.5"
    assert [row["run_id"] for row in tracker.finish(log_front_models=False)] == [ok]

    client = mlflow.MlflowClient(uri)
    run = client.get_run(over)
    assert run.info.status == "FINISHED"  # a complete result, only not an admissible one
    assert run.data.tags["archsearch.infeasible"] == "params_ratio 0.6 > max 0.5"
    assert run.data.tags["archsearch.pareto"] == "false"
    assert not front_candidate(run) and front_candidate(client.get_run(ok))
    assert [row["run_id"] for row in front_rows("constrained", uri)] == [ok]
    payload = collect("constrained", uri)
    marked = {r["run_id"]: (r["infeasible"], r["on_front"]) for r in payload["runs"]}
    assert marked == {ok: (None, True), over: ("params_ratio 0.6 > max 0.5", False)}
    assert payload["counts"]["infeasible"] == 1

    again = SearchTracker("constrained", tracking_uri=uri, constraints=ADMISSIBLE, resume=True)
    assert again.summary(again.parent_run_id)["infeasible"] == 1  # a resume counts it again
    assert [row["run_id"] for row in again.front()] == [ok]


def test_a_constrained_search_marks_what_violates_and_fronts_the_rest(
    tmp_path: Path, restore_environ
) -> None:
    raw = tiny_space(
        "constrained-search",
        trials=3,
        data={"name": "synthetic", "options": {"n_samples": 512}},
        sampler={"name": "random", "seed": 0},  # draws lr 0.02, 1e-6, 0.02
        space={"gate": ["hard_concrete"], "granularity": ["neuron"], "lr": [1e-6, 0.02]},
        train={"epochs": 3, "finetune_epochs": 0, "batch_size": 32, "penalty_lambda": 0.1},
        constraints={"val_accuracy": {"min": 0.6}},  # lr 1e-6 learns next to nothing
    )
    spec = load_spec(write_space(tmp_path, raw))
    outcome, lines, uri = search_to_end(tmp_path, spec)
    assert outcome.finished == 3 and not outcome.interrupted

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("constrained-search")
    children = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if "archsearch.trial_id" in r.data.tags
    ]
    infeasible = [r for r in children if r.data.metrics["val_accuracy"] < 0.6]
    feasible = [r for r in children if r.data.metrics["val_accuracy"] >= 0.6]
    assert infeasible and feasible, [r.data.metrics["val_accuracy"] for r in children]
    assert outcome.infeasible == len(infeasible)
    for run in infeasible:
        assert run.info.status == "FINISHED"
        assert run.data.tags["archsearch.infeasible"].startswith("val_accuracy ")
        assert run.data.tags["archsearch.pareto"] == "false"
    assert all("archsearch.infeasible" not in r.data.tags for r in feasible)
    points = [[r.data.metrics["val_accuracy"], r.data.metrics["flops"]] for r in feasible]
    flags = non_dominated(points, ["max", "min"])
    front = {r.info.run_id for r, on in zip(feasible, flags, strict=True) if on}
    assert {row["run_id"] for row in api.front("constrained-search", uri)} == front
    pattern = r"infeasible \(val_accuracy [\d.]+ < min 0\.6\)"
    assert any(re.search(pattern, line) for line in lines), lines
    banner = next(line for line in lines if line.startswith("starting"))
    assert "constraints: val_accuracy >= 0.6" in banner
