"""``sampler.stratify``: one Optuna study per value of a searched choice (a granularity), each
with an equal share of the trials, so a structured front is searched as hard as the
weight-sparse front that would otherwise dominate the sampler's ranking."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import mlflow
import pytest
from conftest import TRIAL_SPACE, search_to_end, space_error, tiny_space, trial_spec, write_space

from archsearch.search.searcher import StudySearch
from archsearch.search.strata import StratifiedSearch, make_searcher
from archsearch.space import load_spec

STRATIFIED = {
    **TRIAL_SPACE,
    "trials": 6,
    "sampler": {"name": "tpe", "seed": 3, "stratify": "granularity"},
    "space": {**TRIAL_SPACE["space"], "gate_inputs": [False, True]},
}


def result(accuracy: float, flops: float) -> dict[str, Any]:
    return {"val_accuracy": accuracy, "flops": flops}


def test_trials_are_dealt_in_turn_and_each_study_ranks_only_its_own(tmp_path: Path) -> None:
    spec = trial_spec(tmp_path, STRATIFIED)
    searcher = make_searcher(spec)
    assert isinstance(searcher, StratifiedSearch)
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    assert [c["granularity"] for c in configs] == ["neuron", "weight"] * 3  # the file's order
    for config in configs:  # input gating is drawn with neurons only, as without strata
        assert ("gate_inputs" in config) == (config["granularity"] == "neuron")
        assert spec.trial_config(config).granularity == config["granularity"]
    # every weight trial dominates every neuron trial: one study would rank no neuron trial
    # on its front; the neuron study ranks them against each other
    for i, config in enumerate(configs):
        weight = config["granularity"] == "weight"
        told = result(0.9, 1.0) if weight else result(0.5 + i / 100, 10.0 + i)
        searcher.on_trial_complete(f"t{i}", told)
    neuron, weight = searcher.studies["neuron"].study, searcher.studies["weight"].study
    assert len(neuron.trials) == len(weight.trials) == 3
    assert {t.number for t in neuron.best_trials} == {t.number for t in neuron.trials}
    assert all("granularity" not in t.params for t in neuron.trials + weight.trials)


def test_a_saved_stratified_searcher_resumes_its_turn_and_its_studies(tmp_path: Path) -> None:
    spec = trial_spec(tmp_path, STRATIFIED)
    searcher = StratifiedSearch(spec)
    for i in range(3):
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", result(0.8, 50.0))
    searcher.save(str(tmp_path / "searcher.pkl"))

    restored = StratifiedSearch(spec)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored.suggest("t3")["granularity"] == "weight"  # 2 neuron, 1 weight so far
    assert len(restored.studies["neuron"].study.trials) == 2
    assert len(restored.studies["weight"].study.trials) == 2  # t1 told, t3 asked
    dealt = [restored.suggest(f"t{i}")["granularity"] for i in (4, 5)]
    assert dealt == ["neuron", "weight"]
    assert restored.suggest("t6") == StratifiedSearch.FINISHED  # 6 trials in all, not each


def test_each_stratum_samples_with_its_own_seed(tmp_path: Path) -> None:
    spec = trial_spec(tmp_path, STRATIFIED)
    assert [spec.stratum(value).seed for value in spec.strata()] == [3000, 3001]
    assert spec.stratum("weight").base.granularity == "weight"
    assert spec.describe()["sampler.stratify"] == "granularity"
    plain = trial_spec(tmp_path, TRIAL_SPACE)
    assert "sampler.stratify" not in plain.describe()  # searches made before it still resume
    assert isinstance(make_searcher(plain), StudySearch)


@pytest.mark.parametrize(
    ("stratify", "message"),
    [
        ("granularty", "expected a searched parameter with a list of choices (gate, granul"),
        ("penalty.lambda", "expected a searched parameter with a list of choices"),
        ("arm.k", "expected a searched parameter with a list of choices"),
        ("gate_inputs", "'gate_inputs' is drawn only when granularity is one of ['neuron']"),
    ],
)
def test_a_bad_stratify_is_one_line(tmp_path: Path, stratify: str, message: str) -> None:
    raw = {**STRATIFIED, "sampler": {"name": "tpe", "stratify": stratify}}
    error = space_error(tmp_path, raw)
    assert error.startswith(f"{tmp_path / 'space.yaml'}: sampler.stratify: {message}"), error


def test_a_stratified_search_runs_each_granularity_its_share(
    tmp_path: Path, restore_environ
) -> None:
    raw = tiny_space(
        "stratified",
        trials=5,
        sampler={"name": "tpe", "seed": 0, "stratify": "granularity", "start": "spread"},
        space={
            "gate": ["hard_concrete", "arm"],
            "granularity": ["weight", "neuron"],
            "penalty.lambda": {"loguniform": [0.01, 1.0]},
        },
    )
    outcome, lines, uri = search_to_end(tmp_path, load_spec(write_space(tmp_path, raw)))
    assert not outcome.interrupted and outcome.finished == 5
    banner = next(line for line in lines if line.startswith("starting search"))
    assert "one sampler per granularity (weight, neuron), trials dealt in turn" in banner
    assert "start: the first 10 trials of each sampler spread over the space" in banner

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("stratified")
    children = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if "archsearch.trial_id" in r.data.tags
    ]
    shares = collections.Counter(r.data.params["granularity"] for r in children)
    assert shares == {"weight": 3, "neuron": 2}
    parent = client.get_run(outcome.parent_run_id)
    assert parent.data.params["sampler.stratify"] == "granularity"
    assert parent.data.params["sampler.start"] == "spread"


OWN_RANGES = {
    **STRATIFIED,
    "strata": {
        "neuron": {
            "penalty.lambda": {"loguniform": [0.5, 2.0]},
            "gate": ["hard_concrete", "arm"],
        }
    },
}


def test_a_stratum_draws_from_its_own_ranges_and_the_others_from_the_space(
    tmp_path: Path,
) -> None:
    spec = trial_spec(tmp_path, OWN_RANGES)
    searcher = make_searcher(spec)
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    neuron = [c for c in configs if c["granularity"] == "neuron"]
    weight = [c for c in configs if c["granularity"] == "weight"]
    assert neuron and weight
    for config in neuron:  # only the stratum's own range and gates
        assert 0.5 <= config["penalty.lambda"] <= 2.0
        assert config["gate"] in ("hard_concrete", "arm")
        assert ("arm.k" in config) == (config["gate"] == "arm")  # a gate's option still follows it
    stratum = spec.stratum("weight")
    assert stratum.param("penalty.lambda").values == (0.001, 10.0)
    assert len(stratum.param("gate").values) == 4
    described = spec.describe()  # a resumed search must be given the same strata
    assert (
        described["strata.neuron.penalty.lambda"]
        == spec.stratum("neuron").param("penalty.lambda").describe()
    )
    assert not any(k.startswith("strata.") for k in trial_spec(tmp_path, STRATIFIED).describe())


@pytest.mark.parametrize(
    ("strata", "sampler", "message"),
    [
        (
            {"neuron": {"penalty.lambda": {"loguniform": [2.0, 0.5]}}},
            None,
            "strata.neuron.penalty.lambda.loguniform: expected finite lo < hi, got [2.0, 0.5]",
        ),
        (
            {"channel": {"penalty.lambda": {"loguniform": [0.5, 2.0]}}},
            None,
            "strata.channel: not a value of granularity in space; expected one of "
            "['neuron', 'weight']",
        ),
        (
            {"neuron": {"penalty.target": {"uniform": [0.1, 0.2]}}},
            None,
            "strata.neuron.penalty.target: not searched in space; a stratum gives its own "
            "choices or range to one of: gate, arm.k, gate_inputs, penalty.lambda",
        ),
        (
            {"neuron": {"granularity": ["weight"]}},
            None,
            "strata.neuron.granularity: fixed at 'neuron' in this stratum; it cannot vary",
        ),
        (
            {"neuron": {"gate": ["hard_concrete"]}},
            None,
            "strata.neuron.arm.k: gate 'arm' is not among the gates searched: hard_concrete",
        ),
        (
            {"neuron": {"penalty.lambda": {"loguniform": [0.5, 2.0]}}},
            {"name": "tpe", "seed": 0},
            "strata: needs sampler.stratify",
        ),
        ({"neuron": {}}, None, "strata.neuron: expected a non-empty mapping"),
    ],
)
def test_a_bad_stratum_range_is_one_line_naming_it(
    tmp_path: Path, strata: dict[str, Any], sampler: dict[str, Any] | None, message: str
) -> None:
    raw = {**STRATIFIED, "strata": strata, **({"sampler": sampler} if sampler else {})}
    error = space_error(tmp_path, raw)
    assert error.startswith(f"{tmp_path / 'space.yaml'}: {message}"), error


def test_a_stratum_range_reaches_a_real_search(tmp_path: Path, restore_environ) -> None:
    raw = tiny_space(
        "own-ranges",
        trials=4,
        sampler={"name": "tpe", "seed": 0, "stratify": "granularity"},
        space={
            "gate": ["hard_concrete"],
            "granularity": ["weight", "neuron"],
            "penalty.lambda": {"loguniform": [0.01, 1.0]},
        },
        strata={"neuron": {"penalty.lambda": {"loguniform": [3.0, 4.0]}}},
    )
    outcome, _, uri = search_to_end(tmp_path, load_spec(write_space(tmp_path, raw)))
    assert outcome.finished == 4
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("own-ranges")
    runs = client.search_runs([experiment.experiment_id])
    children = [r.data.params for r in runs if "archsearch.trial_id" in r.data.tags]
    drawn = {p["granularity"]: [] for p in children}
    for params in children:
        drawn[params["granularity"]].append(float(params["penalty.lambda"]))
    assert all(3.0 <= x <= 4.0 for x in drawn["neuron"]) and len(drawn["neuron"]) == 2
    assert all(0.01 <= x <= 1.0 for x in drawn["weight"]) and len(drawn["weight"]) == 2
    parent = client.get_run(outcome.parent_run_id)
    assert "strata.neuron.penalty.lambda" in parent.data.params
