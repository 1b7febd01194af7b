"""MOASHA: the rung rule on hand-made results, the scheduler's decisions and its state across a
restart, what Optuna is told of a stopped trial, and a real search killed and resumed.

The rule (``archsearch.rungs``): at a rung, keep the top ceil(n / eta) of the n results there,
ordered by an epsilon-net in log cost (every cost bin's best before any runner-up), then
non-dominated rank, then accuracy, cost and arrival.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
from conftest import (
    TINY_SPACE,
    kill_group,
    space_error,
    start_cli,
    tiny_space,
    wait_for_log,
    write_space,
)

from archsearch.pareto import non_dominated, nondominated_ranks
from archsearch.rungs import continues, cost_bin, keep_count, rung_epochs, rung_order
from archsearch.search.moasha import MoashaScheduler, RungBook, RungBookKeeper, live_book
from archsearch.search.reports import EPOCH_KEY
from archsearch.search.searcher import StudySearch
from archsearch.space import SearchSpec, load_spec

# -- the rule ------------------------------------------------------------------------------


def test_rungs_sit_at_grace_times_powers_of_eta_while_eta_times_the_rung_fits() -> None:
    # a rung only where eta times its epochs still fit: none at 9 of 10 epochs
    assert rung_epochs(1, 3, 10) == (1, 3)
    assert rung_epochs(1, 3, 9) == (1, 3)
    assert rung_epochs(1, 3, 27) == (1, 3, 9)
    assert rung_epochs(2, 2, 20) == (2, 4, 8)
    assert rung_epochs(4, 3, 11) == ()
    assert [keep_count(n, 3) for n in (1, 2, 3, 4, 6, 7)] == [1, 1, 1, 2, 2, 3]


def test_a_single_result_goes_on() -> None:
    assert continues({"a": (0.1, 1.0)}, "a", eta=3)
    assert continues({"a": (0.1, 1.0)}, "a", eta=3, rank="cost_bins")


def test_identical_results_keep_the_one_recorded_first() -> None:
    results = {"a": (0.8, 0.3), "b": (0.8, 0.3), "c": (0.8, 0.3)}
    assert rung_order(results, rank="cost_bins") == ["a", "b", "c"]
    assert [continues(results, t, eta=3, rank="cost_bins") for t in results] == [True, False, False]


def test_equal_accuracy_the_cheaper_goes_first_in_any_bin() -> None:
    apart = {"dear": (0.8, 0.9), "cheap": (0.8, 0.05)}  # two bins: cheap dominates
    same_bin = {"dear": (0.8, 0.9), "cheap": (0.8, 0.5)}
    assert cost_bin(0.9) == cost_bin(0.5) != cost_bin(0.05)
    assert (
        rung_order(apart, rank="cost_bins")
        == rung_order(same_bin, rank="cost_bins")
        == ["cheap", "dear"]
    )
    assert not continues(apart, "dear", eta=2, rank="cost_bins") and continues(
        apart, "cheap", eta=2, rank="cost_bins"
    )


def test_equal_cost_the_more_accurate_goes_first() -> None:
    assert rung_order({"low": (0.7, 0.2), "high": (0.9, 0.2)}, rank="cost_bins") == ["high", "low"]


def test_each_cost_bin_keeps_its_best_before_any_runner_up() -> None:
    """The reason for the rule: ranked plainly, two expensive trials beat the only cheap one
    (all three are non-dominated, accuracy breaks the tie); by bins, the cheap one's bin keeps
    it, since its cost may still fall and the expensive ones' too."""
    results = {"dear1": (0.90, 0.8), "dear2": (0.89, 0.7), "cheap": (0.60, 0.05)}
    # plainly, all three are non-dominated and accuracy would keep dear1 and dear2 at eta 2
    assert nondominated_ranks(list(results.values()), ("max", "min")) == [0, 0, 0]
    assert rung_order(results, rank="cost_bins") == ["dear1", "cheap", "dear2"]
    assert [continues(results, t, eta=2, rank="cost_bins") for t in results] == [True, False, True]


def test_rank_nondominated_sorts_every_result_plainly_accuracy_breaking_ties() -> None:
    """``scheduler.rank: nondominated``: no bins; the first non-dominated rank by accuracy,
    then the next rank; a diverged result still last."""
    results = {
        "dear1": (0.90, 0.8),
        "poor": (0.50, 0.9),
        "dear2": (0.89, 0.7),
        "cheap": (0.60, 0.05),
        "nan": (math.nan, 0.01),
    }
    assert rung_order(results, rank="nondominated") == ["dear1", "dear2", "cheap", "poor", "nan"]
    kept = [t for t in results if continues(results, t, eta=2, rank="nondominated")]
    assert kept == ["dear1", "dear2", "cheap"]
    with pytest.raises(ValueError, match="rank must be one of cost_bins, nondominated, hyperv"):
        rung_order(results, rank="crowding")


def test_rank_hypervolume_lets_a_ranks_cheap_end_go_on_before_its_crowded_dear_end() -> None:
    """``scheduler.rank: hypervolume``: the same ranks, but inside one the result that alone
    holds most of the yardstick's box comes first. Plain sorting keeps the two near-equal
    dear trials and stops the only trial near a thousandth of the FLOPs, the front's cheap
    end; this rule keeps that one and the middle, and one of the two dear ones."""
    results = {
        "dear1": (0.90, 0.50),
        "dear2": (0.89, 0.45),
        "poor": (0.50, 0.60),
        "mid": (0.86, 0.10),
        "cheap": (0.80, 0.002),
        "nan": (math.nan, 0.01),
    }
    assert [t for t in results if continues(results, t, eta=2, rank="nondominated")] == [
        "dear1",
        "dear2",
        "mid",
    ]
    assert rung_order(results, rank="hypervolume") == [
        "cheap",
        "mid",
        "dear1",
        "dear2",
        "poor",
        "nan",
    ]
    kept = [t for t in results if continues(results, t, eta=2, rank="hypervolume")]
    assert kept == ["dear1", "mid", "cheap"]
    # one result; or results that hold nothing of the box (below chance): by accuracy
    assert rung_order({"only": (0.5, 0.5)}, rank="hypervolume") == ["only"]
    chance = {"a": (0.05, 0.5), "b": (0.08, 0.9)}
    assert rung_order(chance, rank="hypervolume") == ["b", "a"]


def test_under_an_accuracy_constraint_a_result_below_it_holds_no_share(tmp_path: Path) -> None:
    """A search with ``val_accuracy >= 0.8`` never puts a trial below it on its front, so at
    a rung such a result's share of the box is nothing, however cheap it is: the cheapest
    feasible result is the rank's cheap end instead."""
    results = {
        "dear": (0.90, 0.50),
        "mid": (0.86, 0.10),
        "collapsing": (0.70, 0.001),
        "cheap": (0.84, 0.003),
    }
    assert rung_order(results, rank="hypervolume")[0] == "collapsing"
    floored = rung_order(results, rank="hypervolume", accuracy_floor=0.8)
    assert floored[0] == "cheap" and floored[-1] == "collapsing"
    assert not continues(results, "collapsing", eta=2, rank="hypervolume", accuracy_floor=0.8)
    # the scheduler takes the floor from the space file's constraint
    train = {**TINY_SPACE["train"], "epochs": 3}
    raw = tiny_space(
        scheduler={"name": "moasha", "rank": "hypervolume"},
        train=train,
        constraints={"val_accuracy": {"min": 0.8}, "flops_ratio": {"max": 0.5}},
    )
    assert MoashaScheduler.from_spec(load_spec(write_space(tmp_path, raw))).accuracy_floor == 0.8
    assert MoashaScheduler.from_spec(_moasha_spec(tmp_path)).accuracy_floor is None


def test_a_cheap_feasible_result_weighs_at_a_rung_as_on_the_yardstick() -> None:
    """Of a cheap result just above the floor and a dear accurate one, one goes on (eta 2).
    The yardstick, from chance, gives the cheap one 0.27 of the box and the dear one 0.06;
    measured from the floor instead, 0.03 against 0.27, and the front's cheap end would stop
    (the corner issue 9's searches were short of)."""
    results = {"dear": (0.90, 0.01), "cheap": (0.82, 0.001)}
    assert continues(results, "cheap", eta=2, rank="hypervolume", accuracy_floor=0.8)
    assert not continues(results, "dear", eta=2, rank="hypervolume", accuracy_floor=0.8)


def test_within_a_round_a_dominated_bin_best_comes_after() -> None:
    # the cheap bin's best is better *and* cheaper than the dear bin's best
    results = {"dear": (0.70, 0.9), "cheap": (0.85, 0.05), "cheap2": (0.80, 0.04)}
    assert rung_order(results, rank="cost_bins") == ["cheap", "dear", "cheap2"]


def test_a_diverged_result_ranks_last() -> None:
    results = {"nan": (math.nan, 0.5), "poor": (0.05, 1.0)}
    assert rung_order(results, rank="cost_bins") == ["poor", "nan"]
    assert not continues(results, "nan", eta=2, rank="cost_bins")


def test_nondominated_ranks_peel_fronts() -> None:
    points = [[0.9, 10], [0.8, 5], [0.7, 20], [math.nan, 1]]
    assert nondominated_ranks(points, ("max", "min")) == [0, 0, 1, 4]
    assert [r == 0 for r in nondominated_ranks(points, ("max", "min"))] == non_dominated(
        points, ("max", "min")
    )


# -- the scheduler -------------------------------------------------------------------------


def _report(scheduler: MoashaScheduler, trial_id: str, epoch: int, acc: float, cost: float) -> str:
    trial = SimpleNamespace(trial_id=trial_id)  # what the scheduler reads of Tune's Trial
    result = {EPOCH_KEY: epoch, "val_accuracy": acc, "hard_cost_ratio": cost, "flops": math.nan}
    return scheduler.on_trial_result(None, trial, result)


def test_scheduler_stops_at_rungs_and_its_state_survives_a_restart() -> None:
    """Tune restores a scheduler as pickled at the start (empty); the rung records come back
    through the keeper's state, which Tune saves with its experiment checkpoint, so a trial
    arriving after a restart meets the results recorded before it."""
    scheduler = MoashaScheduler(grace_epochs=1, eta=3, epochs=10, bin_decades=0.5)
    as_started = pickle.dumps(scheduler)  # what tuner.pkl holds
    book, lines = RungBook(), []
    keeper = RungBookKeeper(book, lines.append)
    assert keeper.get_state() is None  # nothing recorded: nothing for Tune to save
    with live_book(book):
        assert _report(scheduler, "a", 1, 0.9, 0.5) == "CONTINUE"
        assert _report(scheduler, "b", 1, 0.5, 0.5) == "STOP"
        assert _report(scheduler, "a", 2, 0.1, 0.5) == "CONTINUE"  # not a rung
        assert scheduler.on_trial_result(None, SimpleNamespace(trial_id="a"), {}) == "CONTINUE"
    saved = pickle.dumps(keeper.get_state())  # Tune pickles callback states

    restored, new_book = pickle.loads(as_started), RungBook()
    RungBookKeeper(new_book, lines.append).set_state(pickle.loads(saved))
    assert lines == ["moasha: restored 2 results at rungs 1; 1 trials stopped there"]
    with live_book(new_book):
        assert _report(restored, "c", 1, 0.7, 0.5) == "STOP"  # a (0.9) holds the one place
    assert list(new_book.recorded[1]) == ["a", "b", "c"]
    assert new_book.stopped == {"b": 1, "c": 1}

    with live_book(RungBook()):  # without its state, c would have been first: kept
        assert _report(pickle.loads(as_started), "c", 1, 0.7, 0.5) == "CONTINUE"


def test_a_rerun_after_a_resume_gets_its_first_decision() -> None:
    """A trial Ray's saved state had not seen end runs again after a resume; it was logged
    once, with the decision it got, so that decision stands whatever the rerun reports."""
    scheduler = MoashaScheduler(grace_epochs=1, eta=2, epochs=4, bin_decades=0.5)
    assert _report(scheduler, "a", 1, 0.9, 0.5) == "CONTINUE"
    assert _report(scheduler, "b", 1, 0.5, 0.5) == "STOP"
    assert _report(scheduler, "b", 1, 0.99, 0.5) == "STOP"  # b cut off, run again
    assert _report(scheduler, "a", 1, 0.1, 0.5) == "CONTINUE"
    assert scheduler.book.recorded[1] == {"a": (0.9, 0.5), "b": (0.5, 0.5)}


def test_with_strata_a_trial_is_ranked_against_its_own_stratum_only() -> None:
    """One sampler per granularity exists so the structured front is searched as hard as the
    weight-sparse one; a rung that ranked a neuron trial against weight trials, which
    dominate it at equal cost, would stop nearly every one of them."""
    scheduler = MoashaScheduler(1, 3, 10, 0.5, "nondominated", stratify="granularity")

    def report(trial_id: str, granularity: str, acc: float, cost: float) -> str:
        trial = SimpleNamespace(trial_id=trial_id, config={"granularity": granularity})
        result = {EPOCH_KEY: 1, "val_accuracy": acc, "hard_cost_ratio": cost}
        return scheduler.on_trial_result(None, trial, result)

    assert report("w1", "weight", 0.9, 0.1) == "CONTINUE"
    assert report("w2", "weight", 0.8, 0.2) == "STOP"
    # dominated by both weight trials, but the first of its stratum: it goes on
    assert report("n1", "neuron", 0.7, 0.3) == "CONTINUE"
    assert report("n2", "neuron", 0.6, 0.4) == "STOP"
    assert report("w3", "weight", 0.85, 0.15) == "STOP"  # 3 weight results: 1 place, w1's

    book = RungBook()
    book.set_state(pickle.loads(pickle.dumps(scheduler.book.state())))
    assert book.strata == {
        "w1": "weight",
        "w2": "weight",
        "n1": "neuron",
        "n2": "neuron",
        "w3": "weight",
    }
    assert list(book.peers(1, "neuron")) == ["n1", "n2"]
    # a book saved before strata were kept: its trials are every stratum's peers
    old = {k: v for k, v in scheduler.book.state().items() if k != "strata"}
    book.set_state(old)
    assert list(book.peers(1, "neuron")) == ["w1", "w2", "n1", "n2", "w3"]


# -- the space file ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ({"name": "asha"}, "scheduler.name: expected one of: fifo, moasha, got 'asha'"),
        ({"name": "moasha", "eta": 1}, "scheduler.eta: expected an integer >= 2, got 1"),
        ({"name": "moasha", "grace_epochs": 2}, "scheduler.grace_epochs: expected grace_epochs x"),
        ({"name": "fifo", "eta": 3}, "scheduler.eta: applies to name: moasha only"),
        ({"name": "moasha", "eta": "3"}, "scheduler.eta: expected an integer, got str '3'"),
        (
            {"name": "moasha", "rank": "crowding"},
            "scheduler.rank: expected one of: cost_bins, nondominated, hypervolume, got 'crowding'",
        ),
    ],
)
def test_bad_scheduler_settings_are_one_line(tmp_path: Path, scheduler: dict, message: str) -> None:
    error = space_error(tmp_path, tiny_space(scheduler=scheduler))
    assert error.startswith(f"{tmp_path / 'space.yaml'}: {message}")


def _moasha_spec(folder: Path) -> SearchSpec:
    """The tiny space with MOASHA's defaults, and the 3 epochs their one rung (at 1) needs."""
    train = {**TINY_SPACE["train"], "epochs": 3}
    return load_spec(write_space(folder, tiny_space(scheduler={"name": "moasha"}, train=train)))


def test_the_default_scheduler_is_fifo_and_moasha_is_recorded(tmp_path: Path) -> None:
    assert load_spec(write_space(tmp_path, tiny_space())).scheduler.name == "fifo"
    spec = _moasha_spec(tmp_path)
    assert (spec.scheduler.grace_epochs, spec.scheduler.eta) == (1, 3)
    assert spec.describe()["scheduler"] == "moasha"
    # ties within a rank by share of the box by default; a search started before the key
    # existed ranked by cost bins and resumes with ``rank: cost_bins`` in its file (the key is
    # left out of the fingerprint for that rule)
    assert spec.scheduler.rank == "hypervolume" == MoashaScheduler.from_spec(spec).rank
    assert spec.describe()["scheduler.rank"] == "hypervolume"
    train = {**TINY_SPACE["train"], "epochs": 3}
    binned = tiny_space(scheduler={"name": "moasha", "rank": "cost_bins"}, train=train)
    spec = load_spec(write_space(tmp_path, binned))
    assert spec.scheduler.rank == "cost_bins" == MoashaScheduler.from_spec(spec).rank
    assert "scheduler.rank" not in spec.describe()


# -- what Optuna is told -------------------------------------------------------------------


def test_a_stopped_trial_is_pruned_in_optuna_not_a_result(tmp_path: Path) -> None:
    spec = _moasha_spec(tmp_path)
    searcher = StudySearch(spec)
    searcher.suggest("stopped")
    searcher.suggest("finished")
    rung = {EPOCH_KEY: 1, "val_accuracy": 0.9, "hard_cost_ratio": 0.2, "flops": math.nan}
    searcher.on_trial_complete("stopped", result=rung)
    searcher.on_trial_complete("finished", result={"val_accuracy": 0.6, "flops": 500.0})
    stopped, finished = searcher.study.trials
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.values is None
    assert finished.state == optuna.trial.TrialState.COMPLETE
    assert finished.values == [0.6, 500.0]
    assert [t.number for t in searcher.study.best_trials] == [finished.number]


# -- a real search, killed and resumed -----------------------------------------------------

TRIALS = 8
SPACE = tiny_space(
    "moasha-resume",
    model={"name": "mlp", "options": {"hidden": [64]}},
    # epochs long enough (~0.5 s) that a trial outlives Ray's 2 s between saves of its state
    data={"name": "synthetic", "options": {"n_samples": 32768}},
    trials=TRIALS,
    scheduler={"name": "moasha", "grace_epochs": 1, "eta": 2},  # rungs at epochs 1 and 2
    train={"epochs": 4, "finetune_epochs": 0, "batch_size": 64, "lr": 0.01, "gate_lr": 0.1},
)


def _children(folder: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("moasha-resume")
    return [
        r
        for r in client.search_runs([experiment.experiment_id])
        if "archsearch.trial_id" in r.data.tags
    ]


def _saved_stops(folder: Path) -> int:
    """How many rung stops Ray's last synced experiment snapshot holds (the book's state)."""
    saved = 0
    for path in (folder / "ray_results" / "moasha-resume").glob("callback-states-*.pkl"):
        try:
            states = pickle.loads(path.read_bytes())
        except (EOFError, pickle.UnpicklingError):  # caught mid-copy: asked again
            continue
        saved = max(saved, _stops_in(states))
    return saved


def _stops_in(state: object) -> int:
    """Ray nests callback states by callback list and index; the book's has ``stopped``."""
    if not isinstance(state, dict):
        return 0
    if "stopped" in state:
        return len(state["stopped"])
    return max((_stops_in(inner) for inner in state.values()), default=0)


def _snapshot(folder: Path) -> str:
    """The files of Ray's experiment snapshot and their sizes: a resume that ended short once
    in CI (2026-12-07) without restoring the rung book, and this is what it resumed from."""
    state = folder / "ray_results" / "moasha-resume"
    files = sorted(p for p in state.iterdir() if p.is_file()) if state.is_dir() else []
    return "\nRay snapshot: " + ", ".join(f"{p.name} ({p.stat().st_size} B)" for p in files)


def _wait_for_saved_stop(folder: Path, process, timeout: float) -> None:
    """A kill before Ray saved the stop would test nothing about restoring the book."""
    deadline = time.monotonic() + timeout
    while _saved_stops(folder) < 1:
        assert process.poll() is None and time.monotonic() < deadline, "no stop saved in time"
        time.sleep(0.1)


@pytest.mark.slow
def test_moasha_search_stops_trials_and_resumes_after_a_kill(tmp_path: Path) -> None:
    write_space(tmp_path, SPACE)
    # Ray's own save period (10 s or more) could let the search end before a stop is saved
    frequent_saves = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    first, log = start_cli(tmp_path, "search", "space.yaml", env=frequent_saves)
    try:
        wait_for_log(log, r"^\[.*stopped\] .* -> stopped at epoch \d+ \(rung\)", first, 300)
        _wait_for_saved_stop(tmp_path, first, 60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        kill_group(first)
    stopped_before = {
        r.data.tags["archsearch.trial_id"] for r in _children(tmp_path) if r.info.status == "KILLED"
    }
    assert stopped_before and len(_children(tmp_path)) < TRIALS, "kill between stop and end"

    second, log = start_cli(tmp_path, "search", "space.yaml", "--resume")
    try:
        assert second.wait(timeout=300) == 0, log.read_text()[-3000:] + _snapshot(tmp_path)
    finally:
        kill_group(second)
    text = log.read_text()
    restored = re.search(
        r"^moasha: restored (\d+) results at rungs [\d, ]+; (\d+) trials", text, re.M
    )
    assert restored and int(restored[1]) >= 1, text[-3000:]  # the rungs' records came back

    children = _children(tmp_path)
    trial_ids = [r.data.tags["archsearch.trial_id"] for r in children]
    assert len(trial_ids) == TRIALS == len(set(trial_ids))  # none logged twice, none lost
    stopped = [r for r in children if r.info.status == "KILLED"]
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert stopped_before <= {r.data.tags["archsearch.trial_id"] for r in stopped}
    assert finished and len(stopped) + len(finished) == TRIALS
    for run in stopped:
        tags, metrics = run.data.tags, run.data.metrics
        assert tags["archsearch.stopped_by"] == "rung"
        assert int(tags["archsearch.stopped_at_epoch"]) in (1, 2)
        assert tags["archsearch.pareto"] == "false"
        assert "val_accuracy" not in metrics and "flops" not in metrics
        assert 0 <= metrics["stopped.val_accuracy"] <= 1
    points = [[r.data.metrics["val_accuracy"], r.data.metrics["flops"]] for r in finished]
    flags = non_dominated(points, ["max", "min"])
    front = {r.info.run_id for r, on in zip(finished, flags, strict=True) if on}
    assert {r.info.run_id for r in children if r.data.tags["archsearch.pareto"] == "true"} == front
    last = [line for line in text.splitlines() if line.startswith("[")][-1]
    assert re.match(rf"\[{TRIALS}/{TRIALS} done, 0 running, 0 failed, {len(stopped)} stopped", last)
