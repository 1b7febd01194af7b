"""One finished trial as the front, the table and the plot see it: a row read from a run.

The row itself (``trial_row``, ``row_from_run``, the reference's figures) lives in
``archsearch.run_rows``, which imports no MLflow, so ``archsearch pareto`` can build the same
rows from a SQLite store read directly; here are the queries through MLflow's client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Run

from archsearch.run_rows import (
    REFERENCE_KEYS,
    float_or_none,
    public_row,
    reference_from_run,
    row_from_run,
)
from archsearch.tracking.endings import FINISHED, ending_of_run
from archsearch.tracking.run_ids import resolve_run_id
from archsearch.tracking.store import (
    PARENT_ID_TAG,
    PARETO_TAG,
    REFERENCE_TAG,
    StoredSearch,
    child_runs,
    open_client,
    open_search,
    resolve_tracking_uri,
    store_errors,
)

#: the artifact of the parent run holding the weights of a dense reference trained there
REFERENCE_WEIGHTS = "reference/weights.safetensors"


def front_rows(experiment: str, tracking_uri: str | None) -> list[dict[str, Any]]:
    """The front of the most recent search of ``experiment``, read back from the store (the
    ``archsearch.pareto`` tags the search kept current)."""
    return [
        {key: value for key, value in row.items() if key != "on_front"}
        for row in search_rows(experiment, tracking_uri)
        if row["on_front"]
    ]


def search_rows(experiment: str, tracking_uri: str | None) -> list[dict[str, Any]]:
    """Every finished trial of the most recent search of ``experiment`` as a public row, with
    ``on_front``: whether the search tagged it a member of the (overall) front. What the
    per-granularity fronts are computed from."""
    return rows_of_search(open_search(experiment, tracking_uri))


def rows_of_search(search: StoredSearch) -> list[dict[str, Any]]:
    """``search_rows`` of a search already opened."""
    with store_errors(search.tracking_uri):
        runs = list(child_runs(search.client, search.experiment_id, search.parent.info.run_id))
    return [
        {**public_row(row_from_run(run)), "on_front": run.data.tags.get(PARETO_TAG) == "true"}
        for run in runs
        if front_candidate(run)
    ]


def front_candidate(run: Run) -> bool:
    """Whether a child run competes for a front at all: a trial that ran to its end and meets
    the search's constraints (not stopped early, not tagged infeasible; ``endings``). The one
    place that says so for the fronts computed on read (per granularity, the dashboard's)."""
    return ending_of_run(run) == FINISHED


def row_values(row: dict[str, Any], keys: Iterable[str]) -> list[float]:
    """A row's metrics named by ``keys``, NaN where missing (never on the front)."""
    values = [float_or_none(row["metrics"].get(key)) for key in keys]
    return [math.nan if value is None else value for value in values]


def write_reference(
    client: MlflowClient,
    parent_run_id: str,
    values: dict[str, Any],
    source: str,
    weights: Path | None,
) -> None:
    """The dense reference on the parent run: its weights (``REFERENCE_WEIGHTS``) first, its
    figures, then the tag that says it is there, so a driver killed half-way leaves a search
    without a reference (trained again on ``--resume``) rather than half of one."""
    if weights is not None:
        client.log_artifact(parent_run_id, str(weights), Path(REFERENCE_WEIGHTS).parent.name)
    metrics = [
        Metric(f"reference.{key}", float(values[key]), int(time.time() * 1000), 0)
        for key in REFERENCE_KEYS
        if values.get(key) is not None
    ]
    client.log_batch(parent_run_id, metrics=metrics)
    client.set_tag(parent_run_id, REFERENCE_TAG, source)


def trial_with_reference(
    run_id: str, tracking_uri: str | None
) -> tuple[dict[str, float], dict[str, Any] | None]:
    """A trial run's metrics (``run_id`` or a unique prefix of it) and the dense reference of
    the search it belongs to (its parent run's): what ``archsearch export`` prints beside the
    file it wrote."""
    uri = resolve_tracking_uri(tracking_uri)
    with store_errors(uri):
        client = open_client(uri)
        run = client.get_run(resolve_run_id(client, run_id, uri))
        parent = run.data.tags.get(PARENT_ID_TAG)
        reference = reference_from_run(client.get_run(parent)) if parent else None
    return dict(run.data.metrics), reference


def search_reference(experiment: str, tracking_uri: str | None) -> dict[str, Any] | None:
    """The dense reference of the most recent search of ``experiment``, if it has one."""
    return reference_from_run(open_search(experiment, tracking_uri).parent)
