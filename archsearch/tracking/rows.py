"""One finished trial as the front, the table and the plot see it: a row read from a run.

The tracker builds rows as it logs trials, ``archsearch pareto`` reads them back from the
store; both go through ``trial_row`` so the two cannot disagree on a column.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from mlflow.entities import Run

from archsearch.tracking.endings import FINISHED, ending_of_run
from archsearch.tracking.store import (
    PARETO_TAG,
    REFERENCE_TAG,
    TRIAL_TAG,
    StoredSearch,
    child_runs,
    open_search,
    store_errors,
)

#: what the dense reference holds, logged on the parent run as ``reference.<key>`` metrics
REFERENCE_KEYS = ("val_accuracy", "test_accuracy", "flops")


def trial_row(
    run_id: str,
    trial_id: str,
    config: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
) -> dict[str, Any]:
    """The row of one trial: its run, sampled config, metrics and descriptive tags. The
    penalty weight is the ``penalty.lambda`` param, logged whether sampled or fixed."""
    return {
        "run_id": run_id,
        "trial_id": trial_id,
        "gate": tags.get("archsearch.gate"),
        "granularity": tags.get("archsearch.granularity"),
        "penalty.lambda": float_or_none(config.get("penalty.lambda")),
        "val_accuracy": metrics.get("val_accuracy"),
        "test_accuracy": metrics.get("test_accuracy"),
        "flops": metrics.get("flops"),
        "flops_ratio": metrics.get("flops_ratio"),
        "params": metrics.get("params"),
        "params_ratio": metrics.get("params_ratio"),
        "latency_ratio": metrics.get("latency_ratio"),
        "latency_ms": metrics.get("latency_ms"),
        "architecture": tags.get("archsearch.architecture"),
        "config": dict(config),
        "metrics": dict(metrics),
    }


def row_from_run(run: Run) -> dict[str, Any]:
    """The row of a child run read back from the store."""
    tags = run.data.tags
    config = {key: param_from_text(value) for key, value in run.data.params.items()}
    return trial_row(run.info.run_id, tags.get(TRIAL_TAG, ""), config, run.data.metrics, tags)


def param_from_text(text: str) -> Any:
    """MLflow keeps params as text; numbers and lists were written as JSON, so read them back."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as users get it (``finish``, ``front_rows``, ``--json``): the metrics dict used
    for the objectives is an internal detail."""
    return {key: value for key, value in row.items() if key != "metrics"}


def float_or_none(value: Any) -> float | None:
    """A number, or None for anything that is not one (a missing or textual param)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


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


def reference_from_run(parent: Run) -> dict[str, Any] | None:
    """The dense reference a search logged on its parent run (``reference.*`` metrics and the
    ``archsearch.reference`` tag), or None when it started from untrained weights."""
    source = parent.data.tags.get(REFERENCE_TAG)
    if source is None:
        return None
    metrics = parent.data.metrics
    return {
        "source": source,
        **{key: metrics.get(f"reference.{key}") for key in REFERENCE_KEYS},
    }


def search_reference(experiment: str, tracking_uri: str | None) -> dict[str, Any] | None:
    """The dense reference of the most recent search of ``experiment``, if it has one."""
    return reference_from_run(open_search(experiment, tracking_uri).parent)
