"""Every Ray Tune callback of a search: the progress lines and the MLflow logging.

Both run on the driver, where Tune calls them as trials end. Trials never talk to MLflow:
the driver logs what Tune reports plus the files of the trial's checkpoint, so workers on
other machines need no access to the store. Ray pickles its run config (callbacks included)
into the experiment folder; the real callbacks hold a tracking client and locks, so Ray gets
``LiveCallbacks``, a stand-in that pickles as nothing and calls the ones installed here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray import tune
from ray.tune import result as tune_result
from ray.tune.callback import CallbackList

from archsearch.cost_gap import describe_cost_gap
from archsearch.errors import short_error
from archsearch.search.reports import is_final, stopped_epoch, trial_error_text

if TYPE_CHECKING:
    from archsearch.tracking import SearchTracker

#: where a search's one-line reports go (stderr in the CLI)
ProgressFn = Callable[[str], None]

#: the callbacks of the search running in this driver process (see LiveCallbacks)
_LIVE_CALLBACKS: list[tune.Callback] = []


class LiveCallbacks(CallbackList):
    """Ray pickles the RunConfig, callbacks included, into the experiment folder and restores
    it on resume. The real callbacks hold an MLflow client and locks (not picklable) and belong
    to one driver process anyway, so Ray gets this stand-in: it pickles as nothing and calls
    the callbacks that the running driver installed."""

    def __init__(self) -> None:
        pass  # no state of its own

    @property
    def _callbacks(self) -> list[tune.Callback]:
        return _LIVE_CALLBACKS

    def __reduce__(self) -> tuple[Any, ...]:
        return (LiveCallbacks, ())


@contextlib.contextmanager
def live_callbacks(callbacks: list[tune.Callback]) -> Iterator[None]:
    """Install the callbacks ``LiveCallbacks`` calls, for the length of one ``fit``."""
    _LIVE_CALLBACKS[:] = callbacks
    try:
        yield
    finally:
        _LIVE_CALLBACKS.clear()


class SearchProgress(tune.Callback):
    """One line per ended trial: counts, what it tried and got, and the front so far.

    Tune calls its callbacks in order, so this one (first in the list) has seen a trial end
    before the tracker logs it and calls ``trial_logged``.
    """

    def __init__(self, total: int, emit: ProgressFn) -> None:
        self.total = total
        self.emit = emit
        self._trials: list[Any] = []
        self._ended: set[str] = set()
        self._errors: dict[str, str] = {}
        self._seen_restored = False
        self._retried = 0  # trials run again after a lost node (see worker.RetryPolicy)

    def _observe(self, trials: list[Any]) -> None:
        self._trials = trials
        if not self._seen_restored:  # a resumed search starts with trials that ended before
            self._seen_restored = True
            for trial in trials:
                if trial.status in ("TERMINATED", "ERROR"):
                    self._ended.add(trial.trial_id)

    def ended(self) -> int:
        return len(self._ended)

    def running(self) -> int:
        return sum(t.status == "RUNNING" and t.trial_id not in self._ended for t in self._trials)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self._observe(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._observe(trials)
        self._ended.add(trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._observe(trials)
        self._ended.add(trial.trial_id)
        self._errors[trial.trial_id] = short_error(trial_error_text(trial))

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._retried += 1

    def trial_logged(self, summary: dict[str, Any]) -> None:
        """The tracker's ``on_logged``: the trial is in MLflow, with the front it makes."""
        self.emit(self.line(summary))

    def line(self, summary: dict[str, Any]) -> str:
        finished, failed = summary["finished"], summary["failed"]
        stopped, infeasible = summary.get("stopped", 0), summary.get("infeasible", 0)
        width = len(str(self.total))
        counts = (
            f"[{finished + failed + stopped:>{width}}/{self.total} done, {self.running()} "
            f"running, {failed} failed"
            + (f", {stopped} stopped" if stopped else "")
            + (f", {infeasible} infeasible" if infeasible else "")
            + (f", {self._retried} retried" if self._retried else "")
            + "]"
        )
        return f"{counts} {self._what(summary)} -> {self._result(summary)} | {_front(summary)}"

    def _what(self, summary: dict[str, Any]) -> str:
        config = next(
            (dict(t.config) for t in self._trials if t.trial_id == summary["trial_id"]), {}
        )
        head = f"{config.pop('gate', '?')}/{config.pop('granularity', '?')}"
        penalty = (
            [f"lambda={_number(config.pop('penalty.lambda'))}"]
            if "penalty.lambda" in config
            else []
        )
        rest = [f"{k}={_number(v)}" for k, v in sorted(config.items())]
        return " ".join([head, *penalty, *rest])

    def _result(self, summary: dict[str, Any]) -> str:
        if summary["status"] == "STOPPED":
            return _stopped(summary)
        if summary["status"] not in ("FINISHED", "INFEASIBLE"):
            return f"FAILED ({self._errors.get(summary['trial_id'], 'see its MLflow run')})"
        reported = next(
            (t.last_result or {} for t in self._trials if t.trial_id == summary["trial_id"]), {}
        )
        result = f"val {summary['val_accuracy']:.3f}, FLOPs {summary['flops_ratio']:.1%}"
        if isinstance(reported.get("latency_ratio"), float):
            result += f", latency {reported['latency_ratio']:.0%}"
        if summary["status"] == "INFEASIBLE":
            result += f", infeasible ({summary['violations']})"
        if reported.get("cost_gap_large"):
            expected, hard = reported["expected_cost_ratio"], reported["hard_cost_ratio"]
            result += f" (cost gap: {describe_cost_gap(expected, hard)})"
        return result


def _stopped(summary: dict[str, Any]) -> str:
    """e.g. ``stopped at epoch 3 (rung): val 0.712, cost 14.2% then``."""
    text = f"stopped at epoch {summary['stopped_at_epoch']} ({summary['stopped_by']})"
    accuracy, cost = summary.get("stopped.val_accuracy"), summary.get("stopped.hard_cost_ratio")
    if accuracy is not None and cost is not None:
        text += f": val {accuracy:.3f}, cost {cost:.1%} then"
    return text


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _front(summary: dict[str, Any]) -> str:
    text = f"front: {summary['front_size']} points"
    if summary.get("hypervolume") is not None:
        text += f", hypervolume {summary['hypervolume']:.3f}"
    return text


class TrackingCallback(tune.Callback):
    """Logs each trial into MLflow on the driver when it ends: finished, errored, or stopped
    early (its last report an epoch report, see ``reports``).

    A trial Tune marks TERMINATED is logged by its last report: a final report is its result;
    an epoch report is a stop, logged as one only when ``stop_reason`` names who stopped it
    (a MOASHA rung, the time budget). Otherwise the trial was cut off by Ctrl-C or a lost
    driver (Tune marks running trials TERMINATED as it ends): it is not logged, and a resumed
    search runs it again from its start.

    Through the tracker's ``outage``: while a tracking server is away, ended trials wait on
    the driver (their files stay in the trial's checkpoint) and the search goes on; they are
    logged when it answers, and a server away past the limit stops the search, interrupted.
    An error of the write itself is reported and counted in ``errors``, never raised: raising
    here would stop the whole search. A resumed search also logs the trials that ended before
    but never reached the store (a driver killed while they waited)."""

    def __init__(
        self,
        tracker: SearchTracker,
        on_logged: Callable[[dict[str, Any]], None] | None = None,
        emit: ProgressFn | None = None,
        stop_reason: Callable[[str], str | None] = lambda trial_id: None,
    ) -> None:
        self.tracker = tracker
        self.on_logged = on_logged
        self.stop_reason = stop_reason
        self.errors: list[str] = []
        self._handed: set[str] = set()  # trial ids given to the tracker
        self._caught_up = False
        tracker.outage.on_give_up = _stop_search
        if emit is not None:
            tracker.outage.emit = emit

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        if not self._caught_up:
            self._caught_up = True
            self._catch_up(trials)
        self.tracker.outage.poll()

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # Tune ends a running trial before its final report only on a scheduler's STOP
        self._hand_over_ended(trial, default_reason="rung")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._hand_over(trial, trial_error_text(trial))

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        """The trials have ended: log what still waits before the search's end is logged."""
        self._catch_up(trials)
        self.tracker.outage.drain()

    def _catch_up(self, trials: list[Any]) -> None:
        for trial in trials:
            if trial.trial_id in self._handed or self.tracker.is_logged(trial.trial_id):
                continue
            if trial.status == "TERMINATED":
                self._hand_over_ended(trial, default_reason=None)
            elif trial.status == "ERROR":
                self._hand_over(trial, trial_error_text(trial))

    def _hand_over_ended(self, trial: Any, default_reason: str | None) -> None:
        """A TERMINATED trial: its result, a stop, or (cut off, or never started) nothing."""
        result = trial.last_result or {}
        if is_final(result, self.tracker.objectives):
            self._hand_over(trial, None)
            return
        epoch = stopped_epoch(result)
        reason = self.stop_reason(trial.trial_id) or default_reason
        if epoch is not None and reason is not None:
            self._hand_over(trial, None, stopped=(epoch, reason))

    def _hand_over(
        self, trial: Any, error: str | None, stopped: tuple[int, str] | None = None
    ) -> None:
        if trial.trial_id in self._handed:
            return
        self._handed.add(trial.trial_id)
        metrics = None
        if error is None:
            metrics = {k: v for k, v in (trial.last_result or {}).items() if k not in _RAY_KEYS}
        # the checkpoint, not its folder: a write that waits opens it again when it runs.
        # Only a final report has one: a stopped trial has no files.
        checkpoint = trial.checkpoint if error is None and stopped is None else None
        config = dict(trial.config)
        self.tracker.outage.submit(
            f"trial {trial.trial_id}",
            lambda: self._log(trial.trial_id, config, metrics, checkpoint, (error, stopped)),
            self._warn,
        )

    def _log(
        self,
        trial_id: str,
        config: dict[str, Any],
        metrics: dict[str, Any] | None,
        checkpoint: Any,
        ending: tuple[str | None, tuple[int, str] | None],
    ) -> None:
        error, stopped = ending
        if checkpoint is None:
            run_id = self.tracker.log_trial(
                trial_id, config, metrics=metrics, error=error, stopped=stopped
            )
        else:
            # as_directory: the folder itself for local storage, a temporary copy for remote
            with checkpoint.as_directory() as directory:
                run_id = self.tracker.log_trial(
                    trial_id, config, metrics=metrics, trial_dir=Path(directory)
                )
        if run_id is not None and self.on_logged is not None:
            self.on_logged(self.tracker.summary(run_id))

    def _warn(self, message: str) -> None:
        self.errors.append(message)
        print(f"archsearch: warning: {message}", file=sys.stderr)


def _stop_search() -> None:
    """End the search as Ctrl-C does, so Tune saves its state for --resume: Tune's own
    handler of SIGUSR1, installed while ``fit`` runs in the main thread. (Without that
    handler, SIGUSR1 would kill the process: then the search goes on, its writes waiting.)"""
    usr1 = getattr(signal, "SIGUSR1", None)  # none on Windows
    if usr1 is not None and callable(signal.getsignal(usr1)):
        os.kill(os.getpid(), usr1)


#: keys Tune adds to every result: they describe the Ray run, not the trial (the node's IP
#: stays: the tracker tags runs with it)
_RAY_KEYS = {
    *tune_result.AUTO_RESULT_KEYS,
    *tune_result.DEBUG_METRICS,
    tune_result.DONE,
    tune_result.SHOULD_CHECKPOINT,
} - {tune_result.NODE_IP}

#: Ray colours the actor name in its error text
