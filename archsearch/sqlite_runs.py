"""The latest search of an experiment read straight from a local MLflow SQLite store, with
Python's ``sqlite3`` instead of MLflow.

Why: ``archsearch pareto`` prints a table of a few rows, but ``import mlflow`` alone takes
~1.5 s and opening its SQLite store through ``MlflowClient`` another ~0.7 s (SQLAlchemy,
alembic, MLflow's ORM), most of the command's time (``benchmarks/RESULTS.md``, "Read
commands"). This reads the five tables the command needs (experiments, runs, tags, params,
latest_metrics), read-only, and selects what ``tracking.store`` asks MLflow for: the
experiment by name (active), its most recent active run tagged ``archsearch.parent``
(``latest_parent_run``: start time, newest first, a missing start time last, then run id), and
that run's active children (``child_runs``: MLflow's own order, start time newest first, then
run id). A run's params come in the order MLflow's query reads them (the ``run_uuid`` index:
insertion order), so a row's ``config`` lists its keys as MLflow's ``Run`` does; NaN metrics
are stored as 0 flagged ``is_nan``, read back as NaN, as MLflow does.

Only what this reader was checked against is read: the schema revisions in
``KNOWN_SCHEMAS``, experiments in the default workspace only, MLflow's workspaces off. Any
other store (a server, another schema, a file that is missing or not a database, a missing
experiment or search, a busy or unreadable file) gives None, and the caller reads through
MLflow as before: the same rows, or the same one-line error.
"""

from __future__ import annotations

import math
import os
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from typing import NamedTuple

from archsearch.store_file import sqlite_path

#: MLflow's schema revisions (``alembic_version``) whose tables this reader was checked
#: against: the head of MLflow 3.17.2. A store MLflow has migrated since reads through MLflow.
KNOWN_SCHEMAS = frozenset({"dc11669786a5"})

#: how a search's runs are found (the tracker writes them; the same names as in ``tracking``)
PARENT_TAG = "archsearch.parent"
PARENT_ID_TAG = "mlflow.parentRunId"

#: SQLite's limit on bound values is 32766; MLflow reads runs' values in chunks of 500 too
CHUNK = 500

_TAGGED_RUNS = """
SELECT runs.run_uuid FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid
WHERE tags."key" = ? AND tags.value = ? AND runs.experiment_id = ?
  AND runs.lifecycle_stage = 'active'
"""
_LATEST_PARENT = (
    f"{_TAGGED_RUNS} ORDER BY runs.start_time IS NULL, runs.start_time DESC, runs.run_uuid LIMIT 1"
)
_CHILDREN = f"{_TAGGED_RUNS} ORDER BY runs.start_time DESC, runs.run_uuid"


class StoredRunInfo(NamedTuple):
    run_id: str
    status: str


class StoredRunData(NamedTuple):
    tags: dict[str, str | None]
    params: dict[str, str]
    metrics: dict[str, float]


class StoredRun(NamedTuple):
    """A run as ``run_rows`` reads it: the part of MLflow's ``Run`` the rows use."""

    info: StoredRunInfo
    data: StoredRunData


class SearchRuns(NamedTuple):
    """The parent run of a search and its child runs, in MLflow's order."""

    parent: StoredRun
    children: list[StoredRun]


def read_search(tracking_uri: str, experiment: str) -> SearchRuns | None:
    """The latest search of ``experiment`` in the SQLite store ``tracking_uri`` (resolved, as
    ``store_file.resolve_tracking_uri`` gives it); None wherever MLflow should answer instead."""
    path = sqlite_path(tracking_uri)
    if path is None or os.environ.get("MLFLOW_ENABLE_WORKSPACES"):
        return None
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            db.execute("BEGIN")  # one snapshot for every query, while a search may be writing
            return _read(db, experiment)
    except sqlite3.Error:
        return None


def _read(db: sqlite3.Connection, experiment: str) -> SearchRuns | None:
    versions = db.execute("SELECT version_num FROM alembic_version").fetchall()
    if len(versions) != 1 or versions[0][0] not in KNOWN_SCHEMAS:
        return None
    elsewhere = db.execute(
        "SELECT 1 FROM experiments WHERE workspace IS NOT NULL AND workspace != 'default' LIMIT 1"
    ).fetchall()
    found = db.execute(
        "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?", (experiment,)
    ).fetchall()
    if elsewhere or len(found) != 1 or found[0][1] != "active":
        return None
    experiment_id = found[0][0]
    parents = [row[0] for row in db.execute(_LATEST_PARENT, (PARENT_TAG, "true", experiment_id))]
    if not parents:
        return None
    children = [row[0] for row in db.execute(_CHILDREN, (PARENT_ID_TAG, parents[0], experiment_id))]
    runs = _runs(db, [*parents, *children])
    return SearchRuns(runs[0], runs[1:])


def _runs(db: sqlite3.Connection, run_ids: Sequence[str]) -> list[StoredRun]:
    """The runs ``run_ids``, in that order, with their tags, params and latest metrics."""
    status: dict[str, str] = {}
    tags: dict[str, dict[str, str | None]] = {run_id: {} for run_id in run_ids}
    params: dict[str, dict[str, str]] = {run_id: {} for run_id in run_ids}
    metrics: dict[str, dict[str, float]] = {run_id: {} for run_id in run_ids}
    for start in range(0, len(run_ids), CHUNK):
        chunk = run_ids[start : start + CHUNK]
        status.update(_rows(db, "SELECT run_uuid, status FROM runs", chunk))
        for run_id, key, value in _rows(db, 'SELECT run_uuid, "key", value FROM tags', chunk):
            tags[run_id][key] = value
        for run_id, key, value in _rows(db, 'SELECT run_uuid, "key", value FROM params', chunk):
            params[run_id][key] = value
        query = 'SELECT run_uuid, "key", value, is_nan FROM latest_metrics'
        for run_id, key, value, is_nan in _rows(db, query, chunk):
            metrics[run_id][key] = math.nan if is_nan else value
    return [
        StoredRun(
            StoredRunInfo(run_id, status[run_id]),
            StoredRunData(tags[run_id], params[run_id], metrics[run_id]),
        )
        for run_id in run_ids
    ]


def _rows(db: sqlite3.Connection, select: str, run_ids: Sequence[str]) -> list[tuple]:
    """``select``'s rows for ``run_ids``, each run's in the order they were written (rowid):
    the order MLflow's own query reads them through the table's ``run_uuid`` index."""
    marks = ", ".join("?" * len(run_ids))
    return db.execute(
        f"{select} WHERE run_uuid IN ({marks}) ORDER BY run_uuid, rowid", tuple(run_ids)
    ).fetchall()
