"""A search's trials as the rows of its front, built from runs without importing MLflow.

A run here is anything shaped like MLflow's ``Run`` where the rows look: ``info.run_id``,
``info.status``, ``data.tags``, ``data.params``, ``data.metrics``. So ``archsearch pareto`` can
build its rows from runs read straight out of a SQLite store (``sqlite_runs``), never paying
for MLflow's import. The rows are those of ``tracking.rows`` (``row_from_run``,
``rows_of_search``, ``reference_from_run``) and ``tracking.endings`` (a finished trial):
``tests/test_pareto_fast.py`` holds every output of ``archsearch pareto`` built from either to
be the same. Imports nothing of archsearch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

#: the tags the rows read (the tracker writes them; the same names as in ``tracking``)
TRIAL_TAG = "archsearch.trial_id"
PARETO_TAG = "archsearch.pareto"
REFERENCE_TAG = "archsearch.reference"
STOPPED_TAG = "archsearch.stopped_at_epoch"
INFEASIBLE_TAG = "archsearch.infeasible"
#: on the parent run: the search's objectives (``pareto.format_objectives``)
OBJECTIVES_TAG = "archsearch.objectives"

#: what the dense reference holds, logged on the parent run as ``reference.<key>`` metrics
#: (a reference loaded by a search before it counted params has the first three only)
REFERENCE_KEYS = ("val_accuracy", "test_accuracy", "flops", "params", "train_seconds")


class RunInfo(Protocol):
    @property
    def run_id(self) -> str: ...
    @property
    def status(self) -> str: ...


class RunData(Protocol):
    @property
    def tags(self) -> Mapping[str, str | None]: ...
    @property
    def params(self) -> Mapping[str, str]: ...
    @property
    def metrics(self) -> Mapping[str, float]: ...


class Run(Protocol):
    """What the rows read of a run: MLflow's ``Run`` has it, and so has ``sqlite_runs``'."""

    @property
    def info(self) -> RunInfo: ...
    @property
    def data(self) -> RunData: ...


def rows_of_runs(runs: Iterable[Run]) -> list[dict[str, Any]]:
    """The public row of every finished child run, in the runs' order, with ``on_front``:
    whether the search tagged it a member of the (overall) front."""
    return [
        {**public_row(row_from_run(run)), "on_front": run.data.tags.get(PARETO_TAG) == "true"}
        for run in runs
        if finished(run)
    ]


def finished(run: Run) -> bool:
    """A trial that ran to its end and met the search's constraints: a FINISHED run neither
    stopped early (a KILLED run, but its tag is what says so) nor tagged infeasible."""
    tags = run.data.tags
    return run.info.status == "FINISHED" and STOPPED_TAG not in tags and INFEASIBLE_TAG not in tags


def trial_row(
    run_id: str,
    trial_id: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, float],
    tags: Mapping[str, str | None],
) -> dict[str, Any]:
    """The row of one trial: its run, sampled config, metrics and descriptive tags. The
    penalty weight is the ``penalty.lambda`` param, logged whether sampled or fixed. The
    tracker builds rows with it as it logs trials, and the commands as they read them back,
    so the two cannot disagree on a column."""
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
    """The row of a child run read back from a store."""
    tags = run.data.tags
    config = {key: param_from_text(value) for key, value in run.data.params.items()}
    return trial_row(run.info.run_id, tags.get(TRIAL_TAG) or "", config, run.data.metrics, tags)


def param_from_text(text: str) -> Any:
    """MLflow keeps params as text; numbers and lists were written as JSON, so read them back."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as users get it: the metrics dict used for the objectives is an internal detail."""
    return {key: value for key, value in row.items() if key != "metrics"}


def float_or_none(value: Any) -> float | None:
    """A number, or None for anything that is not one (a missing or textual param)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def reference_from_run(parent: Run) -> dict[str, Any] | None:
    """The dense reference a search logged on its parent run (``reference.*`` metrics and the
    ``archsearch.reference`` tag: ``loaded`` or ``trained``), or None when it has none."""
    source = parent.data.tags.get(REFERENCE_TAG)
    if source is None:
        return None
    metrics = parent.data.metrics
    figures = {
        key: metrics[f"reference.{key}"] for key in REFERENCE_KEYS if f"reference.{key}" in metrics
    }
    return {"source": source, **figures}
