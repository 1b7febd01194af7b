"""``archsearch pareto`` on a local SQLite store reads the file directly (``sqlite_runs``, no
MLflow import) and prints exactly what it prints through MLflow.

One real store per module, written by ``SearchTracker`` as searches write it: an older search,
the latest one (finished trials of two granularities, one infeasible, one stopped early, one
failed, one whose run was deleted, a dense reference, objectives other than the default, params
of several types, a NaN metric), a newer search whose parent run was deleted, another
experiment and an experiment without a search. Each output is compared with the same command
made to read through MLflow (its direct read turned off), and a fresh ``archsearch pareto``
process is checked to import neither MLflow nor SQLAlchemy, torch or Ray.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from archsearch import run_rows, sqlite_runs
from archsearch.cli import main
from archsearch.constraints import Constraint
from archsearch.tracking import (
    SearchTracker,
    child_runs,
    open_search,
    reference_from_run,
    rows_of_search,
)

EXPERIMENT = "fast"
DENSE = 100_000
#: trial id -> (granularity, validation accuracy, FLOPs ratio, params ratio)
TRIALS = {
    "n_wide": ("neuron", 0.95, 0.60, 0.50),
    "n_mid": ("neuron", 0.90, 0.20, 0.25),
    "n_small": ("neuron", 0.86, 0.04, 0.30),  # cheap in FLOPs, not in params
    "n_beaten": ("neuron", 0.80, 0.045, 0.40),
    "w_cheap": ("weight", 0.70, 0.01, 0.02),
    "w_tiny": ("weight", 0.30, 0.003, 0.01),
    "w_mid": ("weight", 0.84, 0.30, 0.20),
    "w_deleted": ("weight", 0.85, 0.002, 0.002),  # on the weight front, but its run is deleted
}
HEAVY = ("mlflow", "sqlalchemy", "alembic", "torch", "ray")


def _log(tracker: SearchTracker, trial_id: str, values: tuple, **extra) -> str | None:
    granularity, accuracy, ratio, params_ratio = values
    metrics = {
        "val_accuracy": accuracy,
        "test_accuracy": math.nan if trial_id == "n_mid" else accuracy - 0.01,
        "flops": ratio * DENSE,
        "flops_ratio": ratio,
        "params": params_ratio * DENSE,
        "params_ratio": params_ratio,
    }
    params = {
        "gate": "hard_concrete" if granularity == "neuron" else "arm",
        "granularity": granularity,
        "penalty.lambda": 0.1,
        "hidden": [8, 4],
        "schedule": "linear warmup",
        "lr": 1e-3,
    }
    return tracker.log_trial(trial_id, params, metrics=metrics, **extra)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("fast")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    older = SearchTracker(EXPERIMENT, tracking_uri=uri)
    _log(older, "old", ("neuron", 0.5, 0.5, 0.5))
    older.finish(log_front_models=False)

    latest = SearchTracker(
        EXPERIMENT,
        tracking_uri=uri,
        objectives={"val_accuracy": "max", "params": "min"},
        constraints=[Constraint("val_accuracy", min=0.2)],
    )
    latest.log_reference(
        {"val_accuracy": 0.97, "test_accuracy": 0.96, "flops": DENSE, "params": DENSE / 2},
        source="trained",
    )
    runs = {trial_id: _log(latest, trial_id, values) for trial_id, values in TRIALS.items()}
    _log(latest, "infeasible", ("neuron", 0.1, 0.001, 0.001))
    _log(latest, "stopped", ("neuron", 0.99, 0.002, 0.002), stopped=(1, "rung"))
    _log(latest, "failed", ("weight", 0.99, 0.002, 0.002), error="RuntimeError: diverged")
    latest.client.delete_run(runs["w_deleted"])
    latest.finish(log_front_models=False)

    newer = SearchTracker(EXPERIMENT, tracking_uri=uri)  # the newest parent run: deleted
    newer.finish(log_front_models=False)
    newer.client.delete_run(newer.parent_run_id)

    other = SearchTracker("other", tracking_uri=uri)
    _log(other, "o1", ("neuron", 0.99, 0.001, 0.001))
    other.finish(log_front_models=False)
    other.client.create_experiment("empty")
    return {"uri": uri, "root": root, "parent": latest.parent_run_id, "runs": runs}


def _pareto(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(["pareto", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _through_mlflow(monkeypatch, argv: list[str], capsys) -> tuple[int, str, str]:
    """The command as it reads through MLflow: the direct read answers "not here"."""
    with monkeypatch.context() as patch:
        patch.setattr(sqlite_runs, "read_search", lambda *args: None)
        return _pareto(argv, capsys)


def test_the_store_is_read_directly_and_as_mlflow_selects(store) -> None:
    found = sqlite_runs.read_search(store["uri"], EXPERIMENT)
    version = sqlite3.connect(store["root"] / "mlflow.db").execute(
        "SELECT version_num FROM alembic_version"
    )
    assert found is not None, (
        f"MLflow's schema is now {version.fetchall()}: check archsearch/sqlite_runs.py's "
        f"queries against it, then add it to KNOWN_SCHEMAS"
    )
    search = open_search(EXPERIMENT, store["uri"])
    assert found.parent.info.run_id == search.parent.info.run_id == store["parent"]
    expected = list(child_runs(search.client, search.experiment_id, store["parent"]))
    assert [run.info.run_id for run in found.children] == [run.info.run_id for run in expected]
    assert store["runs"]["w_deleted"] not in {run.info.run_id for run in found.children}
    for ours, theirs in zip(
        [found.parent, *found.children], [search.parent, *expected], strict=True
    ):
        assert ours.info.status == theirs.info.status
        assert list(ours.data.params.items()) == list(theirs.data.params.items())
        assert ours.data.tags == theirs.data.tags
        assert json.dumps(ours.data.metrics, sort_keys=True) == json.dumps(
            theirs.data.metrics, sort_keys=True
        )


def test_rows_objectives_and_reference_are_mlflows(store) -> None:
    found = sqlite_runs.read_search(store["uri"], EXPERIMENT)
    search = open_search(EXPERIMENT, store["uri"])
    rows = run_rows.rows_of_runs(found.children)
    # json: key order counts, and NaN equals NaN
    assert json.dumps(rows) == json.dumps(rows_of_search(search))
    assert {row["trial_id"] for row in rows} == set(TRIALS) - {"w_deleted"}
    assert any(row["on_front"] for row in rows) and not all(row["on_front"] for row in rows)
    assert run_rows.reference_from_run(found.parent) == reference_from_run(search.parent)
    assert found.parent.data.tags[run_rows.OBJECTIVES_TAG] == "val_accuracy:max,params:min"


@pytest.mark.parametrize(
    "flags",
    [
        [],
        ["--csv"],
        ["--json"],
        ["--by", "granularity"],
        ["--by", "granularity", "--csv"],
        ["--by", "granularity", "--json"],
        ["--max-flops-ratio", "0.25"],
        ["--min-accuracy", "0.85"],
        ["--max-flops-ratio", "25%", "--min-accuracy", "0.5", "--json"],
        ["--max-flops-ratio", "0.25", "--csv"],
        ["--by", "granularity", "--max-flops-ratio", "0.05"],
        ["--by", "granularity", "--min-accuracy", "0.8", "--json"],
        ["--max-flops-ratio", "0.001"],  # nothing fits: one line, exit 2
        ["--by", "granularity", "--min-accuracy", "0.999"],
    ],
)
def test_every_output_is_the_one_mlflow_gives(store, monkeypatch, capsys, flags) -> None:
    argv = [EXPERIMENT, *flags, "--tracking-uri", store["uri"]]
    answers = []
    real = sqlite_runs.read_search

    def read_search(*args: str) -> sqlite_runs.SearchRuns | None:
        answers.append(real(*args))
        return answers[-1]

    with monkeypatch.context() as patch:
        patch.setattr(sqlite_runs, "read_search", read_search)
        direct = _pareto(argv, capsys)
    assert answers and answers[0] is not None  # it really read the file itself
    assert direct == _through_mlflow(monkeypatch, argv, capsys)
    code, out, err = direct
    if code:
        assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    elif not flags:
        assert out.splitlines()[-1].startswith("dense reference (")


def test_a_fresh_pareto_process_imports_no_mlflow(store, capsys) -> None:
    """As a user runs it, in the store's folder (the default ``mlflow.db``) and by URI."""
    assert main(["pareto", EXPERIMENT, "--tracking-uri", store["uri"]]) == 0
    expected = capsys.readouterr().out
    script = (
        "import sys; from archsearch.cli import main; code = main(sys.argv[1:]); "
        f"print(code, sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})), "
        "file=sys.stderr)"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    for argv in (["pareto", EXPERIMENT], ["pareto", EXPERIMENT, "--tracking-uri", store["uri"]]):
        done = subprocess.run(
            [sys.executable, "-c", script, *argv],
            cwd=store["root"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.stderr.strip().splitlines()[-1] == "0 []", done.stderr[-2000:]
        assert done.stdout == expected


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nosuch"], "no experiment named 'nosuch' in sqlite:///"),
        (["empty"], "experiment 'empty' in sqlite:///"),
    ],
)
def test_what_is_not_in_the_store_is_mlflows_one_line(store, capsys, argv, message) -> None:
    assert sqlite_runs.read_search(store["uri"], argv[0]) is None
    code, out, err = _pareto([*argv, "--tracking-uri", store["uri"]], capsys)
    assert (code, out) == (2, "") and len(err.splitlines()) == 1 and message in err, err


def test_a_missing_or_broken_store_file_is_one_line(tmp_path, capsys) -> None:
    missing = f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}"
    assert sqlite_runs.read_search(missing, EXPERIMENT) is None
    code, out, err = _pareto([EXPERIMENT, "--tracking-uri", missing], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "no MLflow store at" in err
    assert not (tmp_path / "nowhere").exists()  # read-only: nothing created
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 100)
    assert sqlite_runs.read_search(f"sqlite:///{junk}", EXPERIMENT) is None
    code, out, err = _pareto([EXPERIMENT, "--tracking-uri", f"sqlite:///{junk}"], capsys)
    assert (code, out) == (2, "") and err.count("\n") == 1 and "cannot use MLflow store" in err


def _copy(store: dict, folder: Path, change: str) -> str:
    """A copy of the store with one statement applied."""
    folder.mkdir()
    copy = folder / "mlflow.db"
    shutil.copy(store["root"] / "mlflow.db", copy)
    with sqlite3.connect(copy) as db:
        db.execute(change)
    return f"sqlite:///{copy}"


def test_what_the_reader_was_not_checked_against_goes_through_mlflow(
    store, tmp_path, monkeypatch
) -> None:
    unknown = _copy(store, tmp_path / "schema", "UPDATE alembic_version SET version_num = 'x'")
    assert sqlite_runs.read_search(unknown, EXPERIMENT) is None
    team = _copy(
        store, tmp_path / "team", "UPDATE experiments SET workspace = 'team' WHERE name = 'other'"
    )
    assert sqlite_runs.read_search(team, EXPERIMENT) is None
    assert sqlite_runs.read_search("http://127.0.0.1:9", EXPERIMENT) is None
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")
    assert sqlite_runs.read_search(store["uri"], EXPERIMENT) is None


def test_the_names_read_are_the_ones_the_tracker_writes() -> None:
    from archsearch import tracking
    from archsearch.tracking import endings

    assert (run_rows.TRIAL_TAG, run_rows.PARETO_TAG, run_rows.REFERENCE_TAG) == (
        tracking.TRIAL_TAG,
        tracking.PARETO_TAG,
        tracking.REFERENCE_TAG,
    )
    assert run_rows.OBJECTIVES_TAG == tracking.OBJECTIVES_TAG
    assert (run_rows.STOPPED_TAG, run_rows.INFEASIBLE_TAG) == (
        endings.STOPPED_TAG,
        endings.INFEASIBLE_TAG,
    )
    assert run_rows.REFERENCE_KEYS == tracking.REFERENCE_KEYS
    assert (sqlite_runs.PARENT_TAG, sqlite_runs.PARENT_ID_TAG) == (
        tracking.PARENT_TAG,
        tracking.PARENT_ID_TAG,
    )
