"""``sampler.start: spread``: each study's first trials cover the space's ranges slice by slice
and deal its choices evenly, so the front's cheap end is tried within the first trials instead
of whenever a random draw happens to land there."""

from __future__ import annotations

import collections
import math
from pathlib import Path

import pytest
from conftest import TRIAL_SPACE, space_error, trial_spec

from archsearch.search.strata import make_searcher
from archsearch.space.start import START_TRIALS, spread_points

SPREAD = {**TRIAL_SPACE, "trials": 12, "sampler": {"name": "tpe", "seed": 5, "start": "spread"}}


def lambda_slices(values: list[float]) -> list[int]:
    """Which tenth of the log-lambda range (1e-3 to 10, as in TRIAL_SPACE) each value is in."""
    return sorted(math.floor((math.log10(v) + 3) / 4 * len(values)) for v in values)


def test_every_slice_of_a_range_gets_one_trial_and_every_choice_its_share(tmp_path: Path) -> None:
    spec = trial_spec(tmp_path, SPREAD)
    points = spread_points(spec)
    assert len(points) == START_TRIALS
    lambdas = [p["penalty.lambda"] for p in points]
    assert all(1e-3 <= v <= 10.0 for v in lambdas)
    assert lambda_slices(lambdas) == list(range(START_TRIALS))  # the cheapest tenth included
    gates = collections.Counter(p["gate"] for p in points)  # 4 gates over 10 trials: 2 or 3
    assert set(gates) == set(TRIAL_SPACE["space"]["gate"]) and set(gates.values()) == {2, 3}
    grains = collections.Counter(p["granularity"] for p in points)
    assert grains == {"neuron": 5, "weight": 5}


def test_a_conditional_parameter_is_laid_out_over_the_trials_it_applies_to(
    tmp_path: Path,
) -> None:
    raw = {**SPREAD, "space": {**SPREAD["space"], "arm.k": {"uniform": [3.0, 10.0]}}}
    points = spread_points(trial_spec(tmp_path, raw))
    arm = [p for p in points if p["gate"] == "arm"]
    assert arm and all(3.0 <= p["arm.k"] <= 10.0 for p in arm)
    ks = sorted(p["arm.k"] for p in arm)  # one in each 1/len of the range
    assert [math.floor((k - 3.0) / 7.0 * len(ks)) for k in ks] == list(range(len(ks)))
    assert all("arm.k" not in p for p in points if p["gate"] != "arm")


def test_the_layout_depends_on_the_seed_and_each_stratum_has_its_own(tmp_path: Path) -> None:
    spec = trial_spec(tmp_path, SPREAD)
    assert spread_points(spec) == spread_points(spec)
    other = trial_spec(tmp_path, {**SPREAD, "sampler": {**SPREAD["sampler"], "seed": 6}})
    assert spread_points(other) != spread_points(spec)
    stratified = {**SPREAD, "sampler": {**SPREAD["sampler"], "stratify": "granularity"}}
    strata = trial_spec(tmp_path, stratified)
    neuron, weight = (spread_points(strata.stratum(v)) for v in ("neuron", "weight"))
    assert neuron != weight and all("granularity" not in p for p in neuron + weight)


def test_the_searcher_proposes_the_layout_first_then_samples(tmp_path: Path) -> None:
    spec = trial_spec(tmp_path, SPREAD)
    searcher = make_searcher(spec)
    first = [searcher.suggest(f"t{i}") for i in range(START_TRIALS)]
    assert first == spread_points(spec)  # real Optuna: the enqueued points, in order
    for i in range(START_TRIALS):
        searcher.on_trial_complete(f"t{i}", {"val_accuracy": 0.5 + i / 100, "flops": 100.0 - i})
    after = searcher.suggest("t10")  # TPE's own proposal, from the space
    assert after["gate"] in TRIAL_SPACE["space"]["gate"] and after not in first
    assert spec.describe()["sampler.start"] == "spread"
    plain = trial_spec(tmp_path, TRIAL_SPACE)
    assert "sampler.start" not in plain.describe()  # searches made before it still resume


def test_a_stratified_searcher_spreads_each_stratum(tmp_path: Path) -> None:
    raw = {**SPREAD, "trials": 20, "sampler": {**SPREAD["sampler"], "stratify": "granularity"}}
    spec = trial_spec(tmp_path, raw)
    searcher = make_searcher(spec)
    configs = [searcher.suggest(f"t{i}") for i in range(2 * START_TRIALS)]
    for value in spec.strata():
        mine = [c for c in configs if c["granularity"] == value]
        assert lambda_slices([c["penalty.lambda"] for c in mine]) == list(range(START_TRIALS))


def test_a_bad_start_is_one_line(tmp_path: Path) -> None:
    raw = {**SPREAD, "sampler": {"name": "tpe", "start": "sobol"}}
    error = space_error(tmp_path, raw)
    expected = "sampler.start: expected one of: random, spread, got 'sobol'"
    assert error == f"{tmp_path / 'space.yaml'}: {expected}", error


@pytest.mark.parametrize("sampler", ["nsga2", "random"])
def test_every_sampler_runs_the_layout_first(tmp_path: Path, sampler: str) -> None:
    raw = {**SPREAD, "sampler": {"name": sampler, "seed": 1, "start": "spread"}}
    spec = trial_spec(tmp_path, raw)
    searcher = make_searcher(spec)
    assert [searcher.suggest(f"t{i}") for i in range(START_TRIALS)] == spread_points(spec)


def test_a_restored_searcher_goes_on_with_the_layout_where_it_stopped(tmp_path: Path) -> None:
    spec = trial_spec(tmp_path, SPREAD)
    searcher = make_searcher(spec)
    for i in range(3):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val_accuracy": 0.8, "flops": 50.0})
    searcher.save(str(tmp_path / "searcher.pkl"))

    restored = make_searcher(spec)  # enqueues a fresh layout, which the saved state replaces
    restored.restore(str(tmp_path / "searcher.pkl"))
    following = [restored.suggest(f"t{i}") for i in range(3, START_TRIALS)]
    assert following == spread_points(spec)[3:]
