"""The dense reference of a search: the network its pruned trials are compared with.

A search without ``init.weights`` trains the dense network once: no gates, the trials' own
settings and schedule (``trial.dense_reference``: ``epochs`` + ``finetune_epochs``, same seed,
same data split); one with them measures the loaded network. With ``init: {from: reference}``
(the default where one is trained) the trials wait for it, and it trains on the CPUs of every
trial slot; otherwise it runs beside them as a Ray task with a trial's resources, taking one
trial's place while it lasts (a search of N trials at concurrency c takes about 1/c of a trial
longer, not a whole trial). Where it runs when the trials wait: on a local Ray, in the
driver's own process, which has torch imported and the data loaded (a Ray task starts a
worker that imports both and loads the data again: a LeNet-300-100 search's first trial
started 1.1-2.6 s sooner, benchmarks/RESULTS.md "The reference in the driver"); on a
cluster, as a Ray task, so it runs on a node that has the data, and with ``resources.gpu``,
where the driver would hold a CUDA context for the whole search. ``reference: {train:
false}`` turns the training off.

It is no trial: it is logged on the parent run (``reference.*`` metrics, the
``archsearch.reference`` tag, a trained one's weights as the artifact
``reference/weights.safetensors`` and in ``<storage>/<name>/reference/``), never as a child
run, so it is never on a front, in a count or in the hypervolume. It is logged the moment it
ends; the end of the search waits for it, a time budget that runs out or Ctrl-C cancels it.
A resumed search finds it on the parent run and never trains it again; a driver killed before
it was logged trains it again on ``--resume``.

``init: {from: reference}``: the trials start from its weights, so the search waits for it
before the first trial and every trial loads the file in the storage folder (its
``init_weights``). On a cluster that folder must be one every node reads, which Ray Tune
requires of ``--storage`` anyway.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from safetensors.torch import save_file

from archsearch.data import DataSplits
from archsearch.errors import ArchSearchError, first_line
from archsearch.pareto import format_reference
from archsearch.search.budget import TimeBudget
from archsearch.search.callbacks import ProgressFn
from archsearch.search.cluster import node_resources
from archsearch.space import SearchSpec
from archsearch.tracking import SearchTracker, download_artifact
from archsearch.tracking.rows import REFERENCE_WEIGHTS
from archsearch.trial import DenseReference, dense_reference

#: how often (seconds) the driver looks at the time budget while the reference trains
POLL_S = 1.0


def weights_path(experiment_path: Path) -> Path:
    """Where a search keeps its trained reference's weights for its trials to load."""
    return experiment_path / REFERENCE_WEIGHTS


def start_reference(
    spec: SearchSpec,
    tracker: SearchTracker,
    experiment_path: Path,
    budget: TimeBudget,
    emit: ProgressFn,
    data: DataSplits | None = None,
) -> SearchSpec:
    """Start (or find, on ``--resume``) the search's dense reference; returns the spec its
    trials run: with ``init: {from: reference}``, starting from the reference's weights.
    ``data``: the data set a local search loaded in this process (None on a cluster)."""
    logged = tracker.reference()
    if logged is not None:
        emit(f"{format_reference(logged)}; kept from this search's first run")
    elif spec.base.init_weights or spec.reference_train:
        log = _logger(tracker, experiment_path, emit)
        if spec.init_from != "reference":
            job = ReferenceJob(spec, budget, emit)
            job.watch(log)
            tracker.finish_waits_for(job.end)
            return spec
        if data is None or spec.gpu > 0:  # a cluster; a GPU context the driver would keep
            log(ReferenceJob(spec, budget, emit).wait_before_trials())
        else:
            log(train_here(spec, data, budget, emit))
    if spec.init_from != "reference":
        return spec
    weights = _weights_file(tracker, experiment_path)
    return dataclasses.replace(spec, base=dataclasses.replace(spec.base, init_weights=weights))


def reference_cpus(spec: SearchSpec) -> float:
    """A trial's CPUs, or, when the trials wait for the reference (``init: {from:
    reference}``), every trial slot's on one node (as many as the widest node with the
    trial's GPUs has): those slots would idle while it trains. On 2 cores, trained alone,
    2 threads took the LeNet-300-100 reference from 13.1 to 8.9 s; in a whole search it
    took 18 s (benchmarks/RESULTS.md, "The reference on the idle slots")."""
    if spec.init_from != "reference":
        return spec.cpu
    nodes = node_resources()
    widest = max((r.get("CPU", 0) for r in nodes if r.get("GPU", 0) >= spec.gpu), default=0)
    return max(spec.cpu, min(spec.cpu * spec.concurrency, widest))


class _BudgetSpent(Exception):
    """Raised at an epoch's end of a reference training here once the time budget is spent."""


def train_here(
    spec: SearchSpec, data: DataSplits, budget: TimeBudget, emit: ProgressFn
) -> DenseReference:
    """The reference for trials that wait for it, trained in this process on ``data`` with the
    threads of every trial slot; torch's thread count is put back after. The time budget is
    checked at each epoch's end; Ctrl-C stops it at once, as it would the Ray task."""
    cpus = reference_cpus(spec)
    emit(_starting_line(spec, cpus, place="in this process"))
    threads = torch.get_num_threads()

    def stop_when_spent(record: dict[str, Any]) -> None:
        if budget.over():
            raise _BudgetSpent

    try:
        return dense_reference(spec.base, data, threads=max(1, int(cpus)), on_epoch=stop_when_spent)
    except _BudgetSpent:
        raise ArchSearchError(_OUT_OF_TIME) from None
    except ArchSearchError:
        raise
    except Exception as error:
        raise ArchSearchError(_failed_line(_cause(error))) from None
    finally:
        torch.set_num_threads(threads)


class ReferenceJob:
    """The reference as one Ray task; ``watch`` logs it from a thread of the driver when it
    ends, ``end`` (called by the tracker's ``finish``) waits for it or cancels it."""

    def __init__(self, spec: SearchSpec, budget: TimeBudget, emit: ProgressFn) -> None:
        self.budget, self.emit = budget, emit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # the function of ``trial`` itself: a worker unpickling it imports no Tune or MLflow.
        # Measuring loaded weights takes seconds: it holds no trial's CPU (as when the driver
        # measured them), so the trials are placed as they would be without it.
        self.cpus = 0 if spec.base.init_weights else reference_cpus(spec)
        task = ray.remote(
            num_cpus=self.cpus,
            num_gpus=spec.gpu,
            max_retries=spec.retries,  # a lost node or worker; its own error is final
        )(dense_reference)
        self.ref = task.remote(spec.base, threads=max(1, int(self.cpus)))
        emit(_starting_line(spec, self.cpus))

    def result(self) -> DenseReference | None:
        """The task's result once it ends; None when it was stopped first (``end(False)``,
        or the time budget ran out). The task's own error is raised."""
        while True:
            ready, _ = ray.wait([self.ref], timeout=POLL_S)
            if ready:
                return ray.get(self.ref)
            if self._stop.is_set() or self.budget.over():
                ray.cancel(self.ref, force=True)
                return None

    def wait_before_trials(self) -> DenseReference:
        """The result, for trials that start from it: Ctrl-C cancels the task, and a
        reference that fails or runs out of time is the search's error."""
        try:
            result = self.result()
        except ray.exceptions.RayError as error:
            raise ArchSearchError(_failed_line(_cause(error))) from None
        except BaseException:
            ray.cancel(self.ref, force=True)
            raise
        if result is None:
            raise ArchSearchError(_OUT_OF_TIME)
        return result

    def watch(self, log: Callable[[DenseReference], None]) -> None:
        """Log the result from a thread as soon as it comes; a failure is one line and the
        search goes on without a reference."""

        def run() -> None:
            try:
                result = self.result()
                if result is None:
                    self.emit("stopped the dense reference before it ended: no reference logged")
                else:
                    log(result)
            except Exception as error:
                self.emit(
                    f"the dense reference failed ({_cause(error)}); the search goes on without one"
                )

        self._thread = threading.Thread(target=run, name="archsearch-reference", daemon=True)
        self._thread.start()

    def end(self, wait: bool) -> None:
        """Wait for the reference (a search that ran to its end), or cancel it."""
        if self._thread is None:
            return
        if not wait:
            self._stop.set()
        elif self._thread.is_alive():
            self.emit("waiting for the dense reference to finish ...")
        self._thread.join()


def _logger(
    tracker: SearchTracker, experiment_path: Path, emit: ProgressFn
) -> Callable[[DenseReference], None]:
    """Logs a result on the parent run: a trained reference's weights into the storage
    folder first (written whole, then renamed), then into MLflow with its figures."""

    def log(result: DenseReference) -> None:
        weights = None
        if result.weights:
            weights = weights_path(experiment_path)
            weights.parent.mkdir(parents=True, exist_ok=True)
            partial = weights.with_name(f".{weights.name}.partial")
            save_file(result.weights, str(partial))
            os.replace(partial, weights)
        source = "trained" if result.weights else "loaded"
        tracker.when_answering(tracker.log_reference, result.metrics, source, weights)
        emit(format_reference({"source": source, **result.metrics}) or "")

    return log


def _weights_file(tracker: SearchTracker, experiment_path: Path) -> str:
    """The reference's weights for the trials: the storage folder's file, else the parent
    run's artifact downloaded there (a storage folder cleaned since the first run)."""
    path = weights_path(experiment_path)
    if not path.is_file():
        into = path.parent.parent  # the artifact's own folder name recreates ``reference/``
        if download_artifact(tracker.client, tracker.parent_run_id, REFERENCE_WEIGHTS, into):
            return str(path)
        raise ArchSearchError(
            f"search {tracker.experiment!r} has a dense reference but neither {path} nor its "
            f"{REFERENCE_WEIGHTS} artifact holds its weights; init.from: reference needs them: "
            f"start a new search (another name or --storage)"
        )
    return str(path)


_OUT_OF_TIME = (
    "the time budget ran out while the dense reference trained, before the first trial "
    "(init.from: reference); give the search more time"
)


def _failed_line(cause: str) -> str:
    return (
        f"the dense reference failed ({cause}); init.from: reference starts every trial from "
        f"it, so the search cannot start"
    )


def _starting_line(spec: SearchSpec, cpus: float, place: str = "as a Ray task") -> str:
    if spec.base.init_weights:
        return f"measuring the dense network loaded from {spec.base.init_weights} ..."
    where = f"{cpus:g} CPU / {spec.gpu:g} GPU {place}"
    epochs = f"{spec.base.epochs} + {spec.base.finetune_epochs} epochs, no gates"
    when = (
        "before the first trial (init.from: reference)"
        if spec.init_from == "reference"
        else "beside the trials"
    )
    return f"training the dense reference ({epochs}; {where}, {when}) ..."


def _cause(error: BaseException) -> str:
    """The task's own error inside Ray's wrapper, on one line."""
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {first_line(cause)}"[:300]
