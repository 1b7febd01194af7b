"""The search: Ray Tune runs the trials, Optuna picks the next points, MLflow records them.

    SearchSpec ─▶ Tuner(StudySearch: OptunaSearch(metric=[val_accuracy, flops], mode=[max, min])
                          or StratifiedSearch: one StudySearch per stratum (sampler.stratify),
                        scheduler: FIFO or MoashaScheduler, stop: BudgetStopper)
      each trial (a Ray actor, anywhere in the cluster): worker.run_one_trial ─▶ tune.report(
      epoch report) per gated epoch ... tune.report(metrics, checkpoint=the trial's files)
      on the driver: MOASHA ranks epoch reports at rungs; TrackingCallback ─▶ MLflow

A trial cut off by a lost node or worker process runs again from its start, up to ``retries``
times (the space file's key); an exception of the trial's own code is never retried (see
``worker.RetryPolicy``). Either way the trial id stays the same, so it is logged once.

Resuming: Ray Tune saves the experiment (trials, Optuna's study) under ``storage/<name>`` and
``Tuner.restore`` picks it up; the tracker reopens the same parent run and skips trial ids it
already logged, so an interrupted search ends with exactly the requested number of trials.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler

from archsearch.data import DataSplits
from archsearch.durations import format_duration
from archsearch.search.budget import BudgetStopper, TimeBudget, live_budget
from archsearch.search.callbacks import (
    LiveCallbacks,
    ProgressFn,
    SearchProgress,
    TrackingCallback,
    live_callbacks,
)
from archsearch.search.cluster import quiet_ray, ray_session, require_resources
from archsearch.search.lost_workers import tolerate_lost_workers
from archsearch.search.moasha import MoashaScheduler, RungBook, RungBookKeeper, live_book
from archsearch.search.reference import start_reference
from archsearch.search.resume import (
    mark_budget_ended,
    require_fresh,
    resumed_settings,
    with_overrides,
    write_settings,
)
from archsearch.search.searcher import live_logged
from archsearch.search.searcher import make_sampler as make_sampler  # where tests find it
from archsearch.search.strata import make_searcher
from archsearch.search.worker import RetryPolicy, trainable
from archsearch.space import SearchSpec
from archsearch.space.start import START_TRIALS
from archsearch.tracking import SearchTracker, check_reachable, prepare_store, resolve_tracking_uri
from archsearch.trial import load_data

DEFAULT_STORAGE = "ray_results"

#: how often Ray saves the experiment's state: its own default, "auto" (every 10 s or more,
#: at most 5% of the time spent saving). Each save writes every trial, so a fixed 1 s period
#: made the driver's cost per trial grow with the search (benchmarks/RESULTS.md, "Faults and
#: load"). What a driver killed between two saves loses is the trials Ray did not yet know:
#: those that ended are in MLflow and a resumed search counts them (``live_logged``); those
#: still running start again. ``TUNE_GLOBAL_CHECKPOINT_S`` set by the user wins.
EXPERIMENT_SAVE_PERIOD = "auto"


@dataclass
class SearchOutcome:
    """How a search ended; ``front`` holds the tracker's rows of the final front."""

    name: str
    experiment_path: str
    tracking_uri: str
    parent_run_id: str
    trials: int
    finished: int = 0
    failed: int = 0
    #: trials run again after a lost node or worker (each still logged once)
    retried: int = 0
    #: trials stopped early (at a MOASHA rung, or by the time budget): logged, off the front
    stopped: int = 0
    #: finished trials that violate a constraint (counted in ``finished`` too)
    infeasible: int = 0
    #: the time budget ended the search; ``not_started``: the trials it left unstarted
    budget_ended: bool = False
    not_started: int = 0
    interrupted: bool = False
    front: list[dict[str, Any]] = field(default_factory=list)
    logging_errors: list[str] = field(default_factory=list)


def run_search(
    spec: SearchSpec,
    *,
    trials: int | None = None,
    concurrency: int | None = None,
    seed: int | None = None,
    address: str | None = None,
    tracking_uri: str | None = None,
    storage: str | None = None,
    resume: bool = False,
    time_budget: float | None = None,
    on_progress: ProgressFn = print,
) -> SearchOutcome:
    """Run (or resume) a search to its end, until Ctrl-C, or until ``time_budget`` seconds
    (default: the file's ``time_budget``; counted from here) are up; returns how it ended."""
    budget = TimeBudget(time_budget if time_budget is not None else spec.time_budget)
    budget.start()
    path = experiment_path(spec, storage)
    overrides = {"trials": trials, "concurrency": concurrency, "seed": seed}
    if resume:
        spec, tracking_uri = resumed_settings(spec, path, overrides, tracking_uri)
    else:
        spec = with_overrides(spec, overrides)
        require_fresh(spec, path)
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    data = None
    if address is None:
        # Local runs load the data once here, so a missing data set is one line, not a failed
        # trial each. (On a cluster the data lives on the workers; the driver may not have it.)
        data = load_data(spec.base)
    elif spec.base.data_root:
        on_progress(
            f"data root {spec.base.data_root}: every Ray node reads it at this path (the "
            f"check here covers this machine only)"
        )
    with quiet_ray():
        # a new store's tables while a local Ray starts; a cluster's address is checked
        # first, so one that does not answer leaves nothing written
        store = prepare_store(uri) if address is None else None
        try:
            with ray_session(spec, address):
                require_resources(spec)
                _join(store)
                outcome, ending = _run(spec, path, uri, resume, on_progress, data, budget)
                ending.start()
            # Ray shut down (~1.3 s, benchmarks/RESULTS.md "The reference in the driver")
            # while the front's models were logged
            ending.join()
            return outcome
        finally:
            _join(store)  # never a half-made store: Ray's start can fail too


def _join(thread: threading.Thread | None) -> None:
    if thread is not None:
        thread.join()


def experiment_path(spec: SearchSpec, storage: str | None) -> Path:
    """Where Ray keeps this search's state: ``<storage>/<space name>``, absolute, because
    trials run in their own working folders."""
    return Path(storage or DEFAULT_STORAGE).expanduser().resolve() / spec.name


def _run(
    spec: SearchSpec,
    path: Path,
    uri: str,
    resume: bool,
    on_progress: ProgressFn,
    data: DataSplits | None,
    budget: TimeBudget,
) -> tuple[SearchOutcome, _Ending]:
    tracker = SearchTracker(
        spec.name,
        tracking_uri=uri,
        objectives=spec.objectives,
        search_params=spec.describe(),
        resume=resume,
        constraints=spec.constraints,
    )
    progress = SearchProgress(spec.trials, on_progress)
    book = RungBook()  # MOASHA's records, saved and restored with Ray's experiment state
    tracking = TrackingCallback(
        tracker,
        on_logged=progress.trial_logged,
        emit=on_progress,
        stop_reason=_stop_reason(book, budget),
    )
    retry = RetryPolicy(spec.retries, on_progress)
    outcome = SearchOutcome(spec.name, str(path), uri, tracker.parent_run_id, spec.trials)
    on_progress(_banner(spec, path, uri, tracker.parent_run_id, resume, budget))
    write_settings(spec, path, uri)
    try:
        spec = _measure_reference(spec, tracker, path, budget, on_progress, data)
        # A second Ctrl-C raises out of fit: Ray skips its final save, and the last one holds.
        # retry first: it decides before the others see a trial; the keeper last, always (Ray
        # restores callback states by position)
        callbacks = [retry, progress, tracking, RungBookKeeper(book, on_progress)]
        with (
            live_callbacks(callbacks),
            live_budget(budget),
            live_book(book),
            live_logged(tracker.logged_trial_ids()),
            _save_period(EXPERIMENT_SAVE_PERIOD),
            contextlib.suppress(KeyboardInterrupt),
        ):
            tolerate_lost_workers()
            _tuner(spec, path, resume).fit()
    except BaseException:
        tracker.finish(status="FAILED", log_front_models=False)
        raise
    outcome.logging_errors, outcome.retried = list(tracking.errors), retry.retried
    _count(outcome, tracker, progress.ended(), budget)
    if outcome.budget_ended:
        mark_budget_ended(path)
    # what still runs on Ray (a reference beside the trials) ends here; the rest needs MLflow only
    tracker.end_pending("KILLED" if outcome.interrupted else "FINISHED")
    return outcome, _Ending(lambda: _finish(outcome, tracker, spec.name, on_progress))


def _finish(
    outcome: SearchOutcome, tracker: SearchTracker, name: str, on_progress: ProgressFn
) -> None:
    """End the parent run (the front's models logged, for a search that ran to its end) and
    log the dashboard."""
    if outcome.interrupted:
        tracker.finish(status="KILLED", log_front_models=False)  # --resume sets it RUNNING
    else:
        on_progress(f"logging the {len(tracker.front())} front models in MLflow ...")
        outcome.front = tracker.finish()
    if not tracker.outage.gave_up:  # the dashboard, too, waits out a server that is away
        tracker.when_answering(_log_dashboard, tracker, name)


class _Ending:
    """The end of a search in a thread of its own, started before Ray shuts down; ``join``
    raises what it raised (a tracking server that stayed away, say)."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work, self._error = work, None
        self._thread = threading.Thread(target=self._run, name="archsearch-end", daemon=True)

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as error:  # handed to the caller's thread in join
            self._error = error

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


@contextlib.contextmanager
def _save_period(seconds: str) -> Iterator[None]:
    """Ray's experiment save period for one ``fit`` (read when its loop starts), unless the
    user set one."""
    if "TUNE_GLOBAL_CHECKPOINT_S" in os.environ:
        yield
        return
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = seconds
    try:
        yield
    finally:
        os.environ.pop("TUNE_GLOBAL_CHECKPOINT_S", None)


def _count(
    outcome: SearchOutcome, tracker: SearchTracker, ended_in_ray: int, budget: TimeBudget
) -> None:
    """How the trials ended, from the store: a resumed search whose trials had all ended
    before sees no step of its own (the callback catches them up), so Ray's count would be
    short. Short of the requested trials: interrupted, unless the time budget ended it."""
    counts = tracker.summary(tracker.parent_run_id)  # no such child: the search's counts only
    outcome.finished, outcome.failed = counts["finished"], counts["failed"]
    outcome.stopped, outcome.infeasible = counts["stopped"], counts["infeasible"]
    logged = outcome.finished + outcome.failed + outcome.stopped
    outcome.budget_ended = budget.ended
    if budget.ended:
        outcome.not_started = max(0, outcome.trials - logged)
    outcome.interrupted = not budget.ended and max(ended_in_ray, logged) < outcome.trials


def _stop_reason(book: RungBook, budget: TimeBudget) -> Callable[[str], str | None]:
    """Who stopped a trial Tune ended before its result: a MOASHA rung (the scheduler's book
    says so), else the time budget once it is spent, else nobody (it was cut off)."""

    def reason(trial_id: str) -> str | None:
        if trial_id in book.stopped:
            return "rung"
        return "time budget" if budget.ended else None

    return reason


def _measure_reference(
    spec: SearchSpec,
    tracker: SearchTracker,
    path: Path,
    budget: TimeBudget,
    emit: ProgressFn,
    data: DataSplits | None,
) -> SearchSpec:
    """The dense network every pruned trial is compared with, once per search: trained (or
    measured, from ``init.weights``) as a Ray task beside the trials, or before them when
    they start from it (``init: {from: reference}``; then in this process on a local Ray);
    a resumed search keeps the one its parent run holds (``archsearch.search.reference``).
    Returns the spec the trials run."""
    return start_reference(spec, tracker, path, budget, emit, data)


def _log_dashboard(tracker: SearchTracker, name: str) -> None:
    """The Pareto dashboard on the parent run, so it opens from the MLflow UI's artifacts."""
    from archsearch.dashboard import collect, log_dashboard, render

    payload = collect(name, tracker.tracking_uri, parent_run_id=tracker.parent_run_id)
    log_dashboard(tracker.client, tracker.parent_run_id, render(payload))


def _banner(
    spec: SearchSpec, path: Path, uri: str, parent: str, resume: bool, budget: TimeBudget
) -> str:
    verb = "resuming" if resume else "starting"
    return (
        f"{verb} search {spec.name!r}: {spec.trials} trials, {spec.concurrency} at a time, "
        f"sampler {spec.sampler} (seed {spec.seed}), {spec.cpu:g} CPU / {spec.gpu:g} GPU per "
        f"trial, up to {spec.retries} retries of a trial cut off by a lost node\n  Ray state: "
        f"{path}\n  MLflow: {uri}, experiment {spec.name!r}, parent run {parent}"
        + "".join(f"\n  {line}" for line in _policy_lines(spec, budget))
        + "".join(f"\n  pre-flight: {line}" for line in spec.preflight)
    )


def _policy_lines(spec: SearchSpec, budget: TimeBudget) -> list[str]:
    """The scheduler, time budget and constraints, when the space sets them."""
    lines = []
    if spec.stratify:
        strata = ", ".join(map(str, spec.strata()))
        lines.append(f"one sampler per {spec.stratify} ({strata}), trials dealt in turn")
    if spec.multivariate:
        lines.append("sampler: multivariate TPE (the parameters a trial draws, modelled jointly)")
    if spec.start == "spread":
        each = " of each sampler" if spec.stratify else ""
        lines.append(f"start: the first {START_TRIALS} trials{each} spread over the space")
    if spec.scheduler.name == "moasha":
        s = spec.scheduler
        rungs = ", ".join(map(str, MoashaScheduler.from_spec(spec).rungs))
        apart = f", each {spec.stratify} ranked apart" if spec.stratify else ""
        lines.append(f"scheduler: moasha (eta {s.eta}), rungs at gated epochs {rungs}{apart}")
    if budget.seconds is not None:
        lines.append(f"time budget: {format_duration(budget.seconds)} from the start")
    if spec.constraints:
        lines.append("constraints: " + ", ".join(c.describe() for c in spec.constraints))
    return lines


def _tuner(spec: SearchSpec, path: Path, resume: bool) -> tune.Tuner:
    if resume:
        return tune.Tuner.restore(
            str(path),
            trainable=trainable(spec),
            resume_unfinished=True,  # trials cut off mid-way run again, same trial id
            resume_errored=False,  # a failed trial is a result: it stays failed, counted
            restart_errored=False,
        )
    return tune.Tuner(
        trainable(spec),
        tune_config=tune.TuneConfig(
            search_alg=make_searcher(spec),
            scheduler=_scheduler(spec),
            num_samples=spec.trials,
            max_concurrent_trials=spec.concurrency,
            reuse_actors=True,  # a reused worker keeps its imports and its loaded data
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(path.parent),
            verbose=0,
            callbacks=[LiveCallbacks()],
            stop=BudgetStopper(),  # asks the time budget of the running driver
            # a lost node or worker: run the trial again (its own errors are not retried)
            failure_config=tune.FailureConfig(max_failures=spec.retries, fail_fast=False),
        ),
    )


def _trial_dirname(trial: Any) -> str:
    """Short and stable: Ray's default name repeats every sampled value."""
    return f"trial_{trial.trial_id}"


def _scheduler(spec: SearchSpec) -> FIFOScheduler:
    """The space file's ``scheduler``: every trial to its end, or MOASHA's rungs."""
    if spec.scheduler.name == "moasha":
        return MoashaScheduler.from_spec(spec)
    return FIFOScheduler()
