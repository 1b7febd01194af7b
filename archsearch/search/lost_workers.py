"""A trial whose worker process Ray killed is cut off, like one on a lost node, not the end.

Ray Tune 2.60's actor manager (``ray.air.execution._internal.actor_manager``) knows two
failures of a trial's running task: the actor died (``RayActorError``: retried up to
``retries``, then a FAILED trial) and the task raised (``RayTaskError``: the trial's own
error). Anything else it raises as "Caught unexpected exception", and ``Tuner.fit`` ends
with it: the whole search. A worker that Ray's memory monitor kills while its trial trains
reaches it as ``OutOfMemoryError``, neither of the two; so did a worker that crashed or a
node that died under a task (``WorkerCrashedError``, ``NodeDiedError``). A 90-minute
LeNet-5-Caffe search ended that way after 5 trials when one trial's worker grew to 18.7 GB
and the monitor killed another, starting trial (benchmarks/RESULTS.md, "LeNet-5-Caffe's
space"). In each case the trial's actor is gone, which is what ``RayActorError`` says, so
``tolerate_lost_workers`` hands them to the manager as one (``WorkerLostError``, Ray's
message kept). Ray's memory monitor killing a trial as its actor starts already arrives as
an actor failure.

This is the one place that reaches inside Ray: the manager's class as Tune's public
``tune_controller`` module names it, and its ``_actor_task_failed``. Where a Ray release has
no such method, nothing is changed (and such a failure ends the search, as before).
"""

from __future__ import annotations

import functools
from typing import Any

from ray.exceptions import (
    NodeDiedError,
    OutOfMemoryError,
    RayActorError,
    RayError,
    RayTaskError,
    WorkerCrashedError,
)
from ray.tune.execution import tune_controller

#: failures of a running trial that mean its worker process is gone
LOST: tuple[type[RayError], ...] = (OutOfMemoryError, WorkerCrashedError, NodeDiedError)


class WorkerLostError(RayActorError):
    """A trial's worker process that Ray killed or lost, as the actor failure it is."""

    def __init__(self, cause: RayError) -> None:
        super().__init__(error_msg=str(cause))


def as_actor_failure(exception: Exception) -> Exception:
    """``exception`` as Tune's actor manager can handle it: a lost worker becomes a
    ``WorkerLostError``; everything else is returned as it is."""
    if isinstance(exception, LOST) and not isinstance(exception, (RayActorError, RayTaskError)):
        return WorkerLostError(exception)
    return exception


def tolerate_lost_workers() -> None:
    """Make Tune's actor manager treat a lost worker as a dead actor (idempotent)."""
    manager = getattr(tune_controller, "RayActorManager", None)
    handler = getattr(manager, "_actor_task_failed", None)
    if handler is None or getattr(handler, "tolerates_lost_workers", False):
        return

    @functools.wraps(handler)
    def task_failed(self: Any, tracked_actor_task: Any, exception: Exception) -> None:
        handler(self, tracked_actor_task, as_actor_failure(exception))

    task_failed.tolerates_lost_workers = True  # type: ignore[attr-defined]
    manager._actor_task_failed = task_failed
