"""The search: Ray Tune runs the trials, Optuna picks the next points, MLflow records them.

    SearchSpec ─▶ Tuner(OptunaSearch(metric=[val_accuracy, flops], mode=[max, min]))
      each trial (a Ray actor, anywhere in the cluster): run_trial ─▶ tune.report(metrics,
      checkpoint=the trial's files)        on the driver: TrackingCallback ─▶ MLflow

Everything Ray- and Optuna-specific lives here; ``run_trial`` knows nothing of either. Trials
report once, at their end: multi-objective Optuna cannot prune on intermediate values, and one
report keeps the contract with the tracker simple.

Resuming: Ray Tune saves the experiment (trials, Optuna's study) under ``storage/<name>`` and
``Tuner.restore`` picks it up; the tracker reopens the same parent run and skips trial ids it
already logged, so an interrupted search ends with exactly the requested number of trials.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune.callback import CallbackList
from ray.tune.search.optuna import OptunaSearch

from archsearch.errors import ArchSearchError
from archsearch.space import SearchSpec
from archsearch.tracking import (
    SearchTracker,
    TrackingCallback,
    check_reachable,
    resolve_tracking_uri,
    trial_error_text,
)
from archsearch.trial import load_data, run_trial

ProgressFn = Callable[[str], None]

#: the file beside Ray's experiment state that remembers how the search was started
SETTINGS_FILE = "archsearch.json"
DEFAULT_STORAGE = "ray_results"
TRIAL_FUNCTION = "archsearch_trial"  # Ray checks that a restored search runs the same name
CONNECT_TIMEOUT_S = 3.0


class ClusterError(ArchSearchError):
    """A Ray cluster that cannot be reached or cannot run a trial."""


class ResumeError(ArchSearchError):
    """A --resume that has nothing to resume, or that would change the search."""


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
    on_progress: ProgressFn = print,
) -> SearchOutcome:
    """Run (or resume) a search to its end, or until Ctrl-C; returns how it ended."""
    path = experiment_path(spec, storage)
    overrides = {"trials": trials, "concurrency": concurrency, "seed": seed}
    if resume:
        spec, tracking_uri = _resumed_settings(spec, path, overrides, tracking_uri)
    else:
        spec = _with_overrides(spec, overrides)
        _require_fresh(spec, path)
    uri = resolve_tracking_uri(tracking_uri)
    check_reachable(uri)
    if address is None:
        _require_data(spec)
    with _quiet_ray(), _ray_session(spec, address):
        _require_resources(spec)
        return _run(spec, path, uri, resume, on_progress)


def experiment_path(spec: SearchSpec, storage: str | None) -> Path:
    """Where Ray keeps this search's state: ``<storage>/<space name>``, absolute, because
    trials run in their own working folders."""
    return Path(storage or DEFAULT_STORAGE).expanduser().resolve() / spec.name


# -- one search, once Ray is up ---------------------------------------------------------------


def _run(
    spec: SearchSpec, path: Path, uri: str, resume: bool, on_progress: ProgressFn
) -> SearchOutcome:
    tracker = SearchTracker(
        spec.name,
        tracking_uri=uri,
        objectives=spec.objectives,
        search_params=spec.describe(),
        resume=resume,
    )
    progress = SearchProgress(spec.trials, on_progress)
    tracking = TrackingCallback(tracker, on_logged=progress.trial_logged)
    outcome = SearchOutcome(spec.name, str(path), uri, tracker.parent_run_id, spec.trials)
    on_progress(_banner(spec, path, uri, tracker.parent_run_id, resume))
    _write_settings(spec, path, uri)
    try:
        # A second Ctrl-C raises out of fit: Ray skips its final save, and the last one holds.
        with _live_callbacks([progress, tracking]), contextlib.suppress(KeyboardInterrupt):
            _tuner(spec, path, resume).fit()
    except BaseException:
        tracker.finish(status="FAILED", log_front_models=False)
        raise
    outcome.logging_errors = list(tracking.errors)
    counts = tracker.summary(tracker.parent_run_id)  # no such child: the search's counts only
    outcome.finished, outcome.failed = counts["finished"], counts["failed"]
    outcome.interrupted = progress.ended() < spec.trials
    if outcome.interrupted:
        tracker.finish(status="KILLED", log_front_models=False)  # --resume sets it RUNNING
    else:
        on_progress(f"logging the {len(tracker.front())} front models in MLflow ...")
        outcome.front = tracker.finish()
    _log_dashboard(tracker, spec.name)
    return outcome


def _log_dashboard(tracker: SearchTracker, name: str) -> None:
    """The Pareto dashboard on the parent run, so it opens from the MLflow UI's artifacts."""
    from archsearch.dashboard import collect, log_dashboard, render

    payload = collect(name, tracker.tracking_uri, parent_run_id=tracker.parent_run_id)
    log_dashboard(tracker.client, tracker.parent_run_id, render(payload))


def _banner(spec: SearchSpec, path: Path, uri: str, parent: str, resume: bool) -> str:
    verb = "resuming" if resume else "starting"
    return (
        f"{verb} search {spec.name!r}: {spec.trials} trials, {spec.concurrency} at a time, "
        f"sampler {spec.sampler} (seed {spec.seed}), {spec.cpu:g} CPU / {spec.gpu:g} GPU per "
        f"trial\n  Ray state: {path}\n  MLflow: {uri}, experiment {spec.name!r}, parent run "
        f"{parent}"
    )


def _tuner(spec: SearchSpec, path: Path, resume: bool) -> Any:
    trainable = _trainable(spec)
    if resume:
        return tune.Tuner.restore(
            str(path),
            trainable=trainable,
            resume_unfinished=True,  # trials cut off mid-way run again, same trial id
            resume_errored=False,  # a failed trial is a result: it stays failed, counted
            restart_errored=False,
        )
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=_searcher(spec),
            num_samples=spec.trials,
            max_concurrent_trials=spec.concurrency,
            reuse_actors=True,  # a reused worker keeps its imports and its loaded data
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str(path.parent),
            verbose=0,
            callbacks=[_LiveCallbacks()],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
        ),
    )


def _trial_dirname(trial: Any) -> str:
    """Short and stable: Ray's default name repeats every sampled value."""
    return f"trial_{trial.trial_id}"


# -- Optuna -------------------------------------------------------------------------------


#: space files name the sampler; each maker takes the seed
SAMPLERS: dict[str, Callable[[int], optuna.samplers.BaseSampler]] = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "nsga2": lambda seed: optuna.samplers.NSGAIISampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
}


def _searcher(spec: SearchSpec) -> Any:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(
        spec.sample,  # define-by-run: a gate's options are drawn only in its own trials
        metric=list(spec.objectives),
        mode=list(spec.objectives.values()),
        sampler=SAMPLERS[spec.sampler](spec.seed),
    )


# -- the trial, on a Ray worker -------------------------------------------------------------


def _trainable(spec: SearchSpec) -> Any:
    def archsearch_trial(config: dict[str, Any]) -> None:
        run_one_trial(spec, config)

    archsearch_trial.__name__ = TRIAL_FUNCTION
    return tune.with_resources(archsearch_trial, {"cpu": spec.cpu, "gpu": spec.gpu})


def run_one_trial(spec: SearchSpec, config: dict[str, Any]) -> None:
    """One trial inside a Tune worker: run it, then report once with its files."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(spec.cpu)))
    trial_config = spec.trial_config(config)
    data = _cached_data(trial_config)
    with tempfile.TemporaryDirectory(prefix="archsearch-trial-") as out:
        result = run_trial(trial_config, out_dir=Path(out), data=data)
        metrics = {
            **result.metrics,
            # the whole trial inside the worker: what the orchestration overhead is measured against
            "trial_seconds": time.perf_counter() - started,
            "node_ip": ray.util.get_node_ip_address(),
            # nodes of one machine share an IP; the node id tells them apart
            "node_id": ray.get_runtime_context().get_node_id(),
        }
        # report copies the folder into the trial's storage before it returns
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(out))


_DATA_CACHE: dict[tuple[Any, ...], Any] = {}


def _cached_data(config: Any) -> Any:
    """Ray reuses a worker for the next trial; keeping the last data set loaded saves seconds
    (Fashion-MNIST) to minutes (CIFAR-10 from disk) per trial. One set only: memory."""
    key = (
        config.data,
        config.data_root,
        config.seed,
        config.val_fraction,
        json.dumps(config.data_options, sort_keys=True, default=str),
    )
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(config)
    return _DATA_CACHE[key]


# -- callbacks that survive Ray pickling the run config ---------------------------------------


#: the callbacks of the search running in this driver process (see _LiveCallbacks)
_LIVE_CALLBACKS: list[tune.Callback] = []


class _LiveCallbacks(CallbackList):
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
        return (_LiveCallbacks, ())


@contextlib.contextmanager
def _live_callbacks(callbacks: list[Any]) -> Iterator[None]:
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
        self._failed: set[str] = set()
        self._errors: dict[str, str] = {}
        self._seen_restored = False

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
        self._failed.add(trial.trial_id)
        self._errors[trial.trial_id] = _last_error_line(trial_error_text(trial))

    # the tracker's on_logged
    def trial_logged(self, summary: dict[str, Any]) -> None:
        self.emit(self.line(summary))

    def line(self, summary: dict[str, Any]) -> str:
        finished, failed = summary["finished"], summary["failed"]
        width = len(str(self.total))
        counts = (
            f"[{finished + failed:>{width}}/{self.total} done, {self.running()} running, "
            f"{failed} failed]"
        )
        return f"{counts} {self._what(summary)} -> {self._result(summary)} | {_front(summary)}"

    def _what(self, summary: dict[str, Any]) -> str:
        config = next(
            (dict(t.config) for t in self._trials if t.trial_id == summary["trial_id"]), {}
        )
        head = f"{config.pop('gate', '?')}/{config.pop('granularity', '?')}"
        lam = (
            [f"lambda={_number(config.pop('penalty.lambda'))}"]
            if "penalty.lambda" in config
            else []
        )
        rest = [f"{k}={_number(v)}" for k, v in sorted(config.items())]
        return " ".join([head, *lam, *rest])

    def _result(self, summary: dict[str, Any]) -> str:
        if summary["status"] != "FINISHED":
            return f"FAILED ({self._errors.get(summary['trial_id'], 'see its MLflow run')})"
        return f"val {summary['val_accuracy']:.3f}, FLOPs {summary['flops_ratio']:.1%}"


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _front(summary: dict[str, Any]) -> str:
    text = f"front: {summary['front_size']} points"
    if summary.get("hypervolume") is not None:
        text += f", hypervolume {summary['hypervolume']:.3f}"
    return text


def _last_error_line(text: str) -> str:
    """The exception line of a traceback without its module path, e.g.
    ``DegenerateTrialError: loss became nan in gated epoch 1 step 1; ...``."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        head, sep, message = line.partition(": ")
        name = head.rsplit(".", 1)[-1]
        if sep and (name.endswith("Error") or name.endswith("Exception")):
            return f"{name}: {message}"[:200]
    return lines[-1][:200] if lines else "no error text"


# -- settings kept for --resume -------------------------------------------------------------


def _with_overrides(spec: SearchSpec, overrides: dict[str, int | None]) -> SearchSpec:
    for key, value in overrides.items():
        if value is not None and value < (0 if key == "seed" else 1):
            raise ArchSearchError(f"--{key} must be at least {0 if key == 'seed' else 1}")
    return dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})


def _fingerprint(spec: SearchSpec) -> str:
    """What a resumed search must not change: the space, the trial settings, the run shape."""
    described = {k: v for k, v in spec.describe().items() if k != "space_file"}
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_settings(spec: SearchSpec, path: Path, uri: str) -> None:
    settings = {
        "space_file": str(Path(spec.source).resolve()),
        "trials": spec.trials,
        "concurrency": spec.concurrency,
        "seed": spec.seed,
        "tracking_uri": uri,
        "fingerprint": _fingerprint(spec),
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")


def _require_fresh(spec: SearchSpec, path: Path) -> None:
    if path.is_dir() and tune.Tuner.can_restore(str(path)):
        raise ResumeError(
            f"{path} already holds a search named {spec.name!r}; continue it with --resume, "
            f"or start over after removing that folder (or with another --storage)"
        )


def _resumed_settings(
    spec: SearchSpec, path: Path, overrides: dict[str, int | None], tracking_uri: str | None
) -> tuple[SearchSpec, str | None]:
    """The search as it was started; flags given again must agree with it."""
    settings_path = path / SETTINGS_FILE
    if not settings_path.is_file() or not tune.Tuner.can_restore(str(path)):
        raise ResumeError(
            f"no search named {spec.name!r} to resume in {path}; start it without --resume "
            f"(or point --storage at the folder that holds it)"
        )
    saved = json.loads(settings_path.read_text())
    for key, value in overrides.items():
        if value is not None and value != saved[key]:
            raise ResumeError(
                f"--{key.replace('_', '-')} {value} differs from the {saved[key]} this search "
                f"started with; --resume continues the search as it was started"
            )
    spec = dataclasses.replace(spec, **{k: saved[k] for k in overrides})
    if _fingerprint(spec) != saved["fingerprint"]:
        raise ResumeError(
            f"{spec.source} changed since the search started ({saved['space_file']}); resuming "
            f"would mix two spaces: restore the file, or start a new search under another name"
        )
    return spec, tracking_uri or saved["tracking_uri"]


# -- Ray --------------------------------------------------------------------------------------


def _require_data(spec: SearchSpec) -> None:
    """Local runs load the data once here, so a missing data set is one line, not a failed
    trial each. (On a cluster the data lives on the workers; the driver may not have it.)"""
    load_data(spec.base)


@contextlib.contextmanager
def _ray_session(spec: SearchSpec, address: str | None) -> Iterator[None]:
    if ray.is_initialized():  # a caller's own Ray session (a notebook, say): use it, keep it
        yield
        return
    if address is None:
        ray.init(
            address="local",  # never attach to some other cluster running on this machine
            num_cpus=max(1, math.ceil(spec.concurrency * spec.cpu)),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
    else:
        _connect(address)
    try:
        yield
    finally:
        ray.shutdown()


def _connect(address: str) -> None:
    _require_listening(address)
    _token_auth_if_available()
    started = time.monotonic()
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError) as error:
        raise ClusterError(
            f"cannot join the Ray cluster at {address} after {time.monotonic() - started:.0f}s "
            f"({str(error).strip().splitlines()[0]}); if its nodes use token authentication "
            f"(RAY_AUTH_MODE=token), this machine needs their token in ~/.ray/auth_token or "
            f"$RAY_AUTH_TOKEN"
        ) from None


def _token_auth_if_available() -> None:
    """Send the local Ray token (~/.ray/auth_token or $RAY_AUTH_TOKEN) when RAY_AUTH_MODE is
    unset, as `ray start --head` and a local ray.init do. Ray leaves it off for an explicit
    address, so a driver meeting a head that `ray start` put in token mode fails after 20 s
    of InvalidAuthToken; a token sent to a head without authentication is simply ignored."""
    try:
        from ray._private.authentication import authentication_token_setup as auth
    except ImportError:  # a Ray without token authentication
        return
    logger = logging.getLogger(auth.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)  # its "token authentication is enabled" notice
    try:
        auth.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        logger.setLevel(level)


def _require_listening(address: str) -> None:
    """ray.init waits minutes for a head that is not there; a plain TCP connect says so in
    seconds."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise ClusterError(
            f"no Ray head answers at {address} ({error.strerror or error}); start one with "
            f"`ray start --head --port={port}` there, or check --address"
        ) from None


def _require_resources(spec: SearchSpec) -> None:
    """A trial asking for more than any node has would wait forever; say so now."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(r.get("CPU", 0) >= spec.cpu and r.get("GPU", 0) >= spec.gpu for r in nodes):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in nodes)
    raise ClusterError(
        f"a trial needs {spec.cpu:g} CPU and {spec.gpu:g} GPU but no Ray node has that "
        f"(nodes: {have or 'none'}); lower resources.cpu / resources.gpu in {spec.source}"
    )


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """The user reads our one line per trial; Ray's tables, tracebacks of failed trials
    (MLflow keeps them) and its save-state chatter would bury it."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old reporter honours verbose=0
    # Save the experiment state at least every second (Ray's default is 10 s or more), so a
    # driver killed hard loses no trial that already reached MLflow.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    quieter = {"ray.tune": logging.CRITICAL, "mlflow": logging.WARNING}
    loggers = {logging.getLogger(name): level for name, level in quieter.items()}
    saved = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in saved.items():
            logger.setLevel(level)
