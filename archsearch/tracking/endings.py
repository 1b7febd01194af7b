"""How a trial ended, as its child run records it: finished, infeasible, stopped or failed.

- **finished**: ran to its end and met the search's constraints: a FINISHED run, on the front
  if nothing beats it;
- **infeasible**: ran to its end but violates a constraint: a FINISHED run (its result is
  complete) tagged ``archsearch.infeasible`` with the violated bounds, never on a front;
- **stopped**: stopped early, at a MOASHA rung or by the time budget: a KILLED run tagged
  ``archsearch.stopped_at_epoch`` (the gated epoch) and ``archsearch.stopped_by`` (``rung``
  or ``time budget``). It has no result: what it had reached is logged as ``stopped.*``
  metrics (the gated model's validation accuracy, its hard-mask cost ratio), never as
  ``val_accuracy`` or ``flops``, so no query for results picks it up;
- **failed**: raised or diverged: a FAILED run with its error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mlflow.entities import Run

from archsearch.constraints import Constraint, violations

STOPPED_TAG = "archsearch.stopped_at_epoch"
STOPPED_BY_TAG = "archsearch.stopped_by"
INFEASIBLE_TAG = "archsearch.infeasible"

FINISHED, INFEASIBLE, STOPPED, FAILED = "finished", "infeasible", "stopped", "failed"

#: what a stopped trial's run holds of its last epoch report, as ``stopped.<key>`` metrics
STOPPED_VALUES = ("val_accuracy", "hard_cost_ratio", "expected_cost_ratio")


def trial_ending(
    metrics: dict[str, Any],
    *,
    error: str | None,
    stopped: tuple[int, str] | None,
    constraints: Iterable[Constraint],
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(ending, tags to add, metrics to log) of a trial handed to the tracker; ``stopped`` is
    (gated epoch, by what) for a trial stopped early."""
    if error is not None:
        return FAILED, {}, metrics
    if stopped is not None:
        epoch, by = stopped
        values = {f"stopped.{k}": metrics[k] for k in STOPPED_VALUES if k in metrics}
        return STOPPED, {STOPPED_TAG: str(epoch), STOPPED_BY_TAG: by}, values
    violated = violations(metrics, constraints)
    if violated:
        return INFEASIBLE, {INFEASIBLE_TAG: "; ".join(violated)}, metrics
    return FINISHED, {}, metrics


def ending_of_run(run: Run) -> str | None:
    """A child run's ending read back from the store; None for one still RUNNING."""
    status, tags = run.info.status, run.data.tags
    if status == "RUNNING":
        return None
    if STOPPED_TAG in tags:
        return STOPPED
    if status != "FINISHED":
        return FAILED
    return INFEASIBLE if INFEASIBLE_TAG in tags else FINISHED


def stopped_summary(metrics: dict[str, Any], tags: dict[str, str]) -> dict[str, Any]:
    """What the progress line says of a stopped trial."""
    return {
        "stopped_at_epoch": int(tags[STOPPED_TAG]),
        "stopped_by": tags[STOPPED_BY_TAG],
        **{f"stopped.{k}": metrics.get(f"stopped.{k}") for k in STOPPED_VALUES},
    }
