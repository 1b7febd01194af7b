"""MLflow tracking of a search, done on the Ray driver only.

Trials never talk to MLflow: the driver logs what Tune reports plus the files of the trial's
checkpoint, so workers on other machines need no access to the store. Layout: one experiment
per search space name, one parent run per search (resume reuses it), one child run per trial
tagged with its Ray trial id, so a resumed search never logs a trial twice.

Everything goes through an explicit ``MlflowClient``: Ray's driver calls callbacks from more
than one thread, and MLflow's fluent API keeps a global "active run".
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, Run, ViewType
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from archsearch.errors import ArchSearchError
from archsearch.pareto import front_csv, front_html, hypervolume_2d, non_dominated


class TrackingError(ArchSearchError):
    """A tracking store that cannot be used, or an experiment or run that is not in it."""


DEFAULT_DB = "mlflow.db"
#: artifacts of a SQLite store live in this folder beside the database file
ARTIFACT_DIR = "mlruns"
DEFAULT_OBJECTIVES: dict[str, str] = {"val_accuracy": "max", "flops": "min"}

PARENT_TAG = "archsearch.parent"
TRIAL_TAG = "archsearch.trial_id"
PARETO_TAG = "archsearch.pareto"
MODEL_TAG = "archsearch.model_uri"
PARENT_ID_TAG = "mlflow.parentRunId"
ERROR_TAG_CHARS = 500
_PARAM_VALUE_CHARS = 6000  # MLflow's limit on a param value


# -- the store ---------------------------------------------------------------------------


def resolve_tracking_uri(uri: str | None) -> str:
    """The store to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow 3's default of a
    SQLite file in the working directory. SQLite paths become absolute, so Ray's driver,
    ``archsearch ui`` and ``archsearch pareto`` all name the same file whatever their cwd."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"
    path = _sqlite_path(uri)
    return f"sqlite:///{path}" if path is not None else uri


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, absolute; None for any other store."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return None
    return Path(uri[len("sqlite:///") :]).expanduser().absolute()


def artifact_root(uri: str) -> Path | None:
    """Where a SQLite store's artifacts go: ``mlruns/`` beside the database file. MLflow's own
    default is ``./mlruns`` of whichever process first opened the store, which would scatter
    artifacts when the search and the UI run from different folders. None for servers: the
    server decides."""
    path = _sqlite_path(uri)
    return path.parent / ARTIFACT_DIR if path is not None else None


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, before any trial runs, when a tracking server is not answering. Any HTTP
    answer (even 401/404) counts as reachable: only the connection matters here."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"MLflow tracking server {uri} is not reachable ({reason}); start it with "
            f"`mlflow server --host 0.0.0.0 --port 5000` or check --tracking-uri"
        ) from None


def require_store(uri: str) -> None:
    """For commands that only read: a missing SQLite file means a wrong folder or URI, and
    opening it would silently create an empty store (and take seconds to do so)."""
    path = _sqlite_path(uri)
    if path is not None and not path.is_file():
        raise TrackingError(
            f"no MLflow store at {path}; run `archsearch search` in this folder first or "
            f"pass --tracking-uri"
        )
    check_reachable(uri)


@contextmanager
def store_errors(uri: str) -> Iterator[None]:
    """A store that cannot be opened (wrong URI, not a database, no permission) becomes one
    line naming it, instead of an SQLAlchemy traceback."""
    try:
        yield
    except (MlflowException, SQLAlchemyError, OSError) as error:
        raise TrackingError(
            f"cannot use MLflow store {uri}: {_first_line(error)}; check --tracking-uri"
        ) from None


@contextmanager
def artifact_progress_bars_off() -> Iterator[None]:
    """MLflow draws a progress bar per downloaded artifact on stderr; our commands print
    their own summary. A user's own setting of the variable wins."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def open_client(uri: str) -> mlflow.MlflowClient:
    """A client on ``uri``; a SQLite store's folder is created so a fresh store just works."""
    path = _sqlite_path(uri)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(uri)


def find_experiment_id(client: mlflow.MlflowClient, name: str) -> str:
    """The id of an existing experiment; the error lists the ones there are."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None and experiment.lifecycle_stage == "active":
        return experiment.experiment_id
    names = sorted(e.name for e in client.search_experiments() if e.name != "Default")
    known = ", ".join(names) if names else "none yet"
    raise TrackingError(
        f"no experiment named {name!r} in {client.tracking_uri} (experiments: {known}); "
        f"the experiment is the search space's `name`"
    )


def _get_or_create_experiment(client: mlflow.MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage != "active":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    root = artifact_root(client.tracking_uri)
    location = (root / _slug(name)).as_uri() if root is not None else None
    return client.create_experiment(name, artifact_location=location)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


def latest_parent_run(client: mlflow.MlflowClient, experiment: str) -> Run | None:
    """The parent run of the most recent search of an experiment (by start time)."""
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.{PARENT_TAG} = 'true'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def child_runs(client: mlflow.MlflowClient, experiment: str, parent_run_id: str) -> Iterator[Run]:
    """Every child run of a search, page by page (searches can have thousands of trials)."""
    token = None
    while True:
        page = client.search_runs(
            [experiment],
            filter_string=f"tags.{PARENT_ID_TAG} = '{parent_run_id}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


# -- rows: one finished trial as the front, the table and the plot see it -----------------


def _row(
    run_id: str,
    trial_id: str,
    config: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
) -> dict[str, Any]:
    lam = config.get("penalty.lambda", tags.get("archsearch.penalty_lambda"))
    return {
        "run_id": run_id,
        "trial_id": trial_id,
        "gate": tags.get("archsearch.gate"),
        "granularity": tags.get("archsearch.granularity"),
        "penalty.lambda": _float_or_none(lam),
        "val_accuracy": metrics.get("val_accuracy"),
        "test_accuracy": metrics.get("test_accuracy"),
        "flops": metrics.get("flops"),
        "flops_ratio": metrics.get("flops_ratio"),
        "params": metrics.get("params"),
        "params_ratio": metrics.get("params_ratio"),
        "architecture": tags.get("archsearch.architecture"),
        "config": dict(config),
        "metrics": dict(metrics),
    }


def _row_from_run(run: Run) -> dict[str, Any]:
    tags = run.data.tags
    config = {key: _param_from_text(value) for key, value in run.data.params.items()}
    return _row(run.info.run_id, tags.get(TRIAL_TAG, ""), config, run.data.metrics, tags)


def _param_from_text(text: str) -> Any:
    """MLflow keeps params as text; numbers and lists were written as JSON, so read them back."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def public_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as users get it (``finish``, ``front_rows``, ``--json``): the metrics dict used
    for the objectives is an internal detail."""
    return {key: value for key, value in row.items() if key != "metrics"}


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def front_rows(experiment: str, tracking_uri: str | None) -> list[dict[str, Any]]:
    """The front of the most recent search of ``experiment``, read back from the store (the
    ``archsearch.pareto`` tags the search kept current)."""
    uri = resolve_tracking_uri(tracking_uri)
    require_store(uri)
    with store_errors(uri):
        client = open_client(uri)
        exp = find_experiment_id(client, experiment)
        parent = latest_parent_run(client, exp)
        if parent is None:
            raise TrackingError(
                f"experiment {experiment!r} in {uri} holds no archsearch search; run "
                f"`archsearch search` on its space first"
            )
        runs = list(child_runs(client, exp, parent.info.run_id))
    return [
        public_row(_row_from_run(run))
        for run in runs
        if run.info.status == "FINISHED" and run.data.tags.get(PARETO_TAG) == "true"
    ]


# -- the tracker ---------------------------------------------------------------------------


class SearchTracker:
    """Logs one search into MLflow as trials end, keeping the Pareto tags, ``pareto.csv``,
    ``pareto.html`` and the hypervolume of the parent run current after every trial."""

    def __init__(
        self,
        experiment: str,
        *,
        tracking_uri: str | None = None,
        objectives: dict[str, str] | None = None,
        search_params: dict[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        self.experiment = experiment
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.objectives = dict(objectives or DEFAULT_OBJECTIVES)
        self._connect(search_params or {}, resume=resume)

    def _connect(
        self, search_params: dict[str, Any], *, resume: bool, parent_run_id: str | None = None
    ) -> None:
        check_reachable(self.tracking_uri)
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, Any]] = {}  # finished child runs
        self._front: set[str] = set()
        self._logged: set[str] = set()
        self._stale: dict[str, str] = {}  # trial id → child run left RUNNING by a crash
        self._failed = 0
        self._trial_ids: dict[str, str] = {}  # run id → trial id, for summaries
        with store_errors(self.tracking_uri):
            self.client = open_client(self.tracking_uri)
            self.experiment_id = _get_or_create_experiment(self.client, self.experiment)
            if parent_run_id is None:
                parent_run_id = self._open_parent(search_params, resume)
            self.parent_run_id = parent_run_id
            self._load_children()

    def __getstate__(self) -> dict[str, Any]:
        """Ray pickles the run config, callbacks included, into the experiment folder so that
        ``Tuner.restore`` can bring them back: keep what names the search, not the connection."""
        names = ("experiment", "tracking_uri", "objectives", "parent_run_id")
        return {name: getattr(self, name) for name in names}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Reconnect to the same parent run, reloading what it already holds."""
        self.experiment = state["experiment"]
        self.tracking_uri = state["tracking_uri"]
        self.objectives = state["objectives"]
        self._connect({}, resume=True, parent_run_id=state["parent_run_id"])

    def _open_parent(self, search_params: dict[str, Any], resume: bool) -> str:
        parent = latest_parent_run(self.client, self.experiment_id) if resume else None
        if parent is None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"search-{datetime.now():%Y%m%d-%H%M%S}",
                tags={PARENT_TAG: "true"},
            )
            self._log_params(run.info.run_id, search_params, existing={})
            return run.info.run_id
        run_id = parent.info.run_id
        if parent.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        # params are immutable in MLflow: a resumed search adds new keys only
        self._log_params(run_id, search_params, existing=parent.data.params)
        return run_id

    def _log_params(self, run_id: str, params: dict[str, Any], existing: dict[str, str]) -> None:
        flat = _flatten(params)
        new = [Param(k, _param_value(v)) for k, v in flat.items() if k not in existing]
        if new:
            self.client.log_batch(run_id, params=new)

    def _load_children(self) -> None:
        """What a resumed search already logged: trial ids, finished rows, front membership."""
        for run in child_runs(self.client, self.experiment_id, self.parent_run_id):
            trial_id = run.data.tags.get(TRIAL_TAG)
            status = run.info.status
            if trial_id is None:
                continue
            if status == "RUNNING":
                self._stale[trial_id] = run.info.run_id
                continue
            self._logged.add(trial_id)
            if status == "FINISHED":
                self._rows[run.info.run_id] = _row_from_run(run)
                if run.data.tags.get(PARETO_TAG) == "true":
                    self._front.add(run.info.run_id)
            else:
                self._failed += 1

    def logged_trial_ids(self) -> set[str]:
        """Trial ids that already have a finished or failed child run in this search."""
        with self._lock:
            return set(self._logged)

    def log_trial(
        self,
        trial_id: str,
        params: dict[str, Any],
        *,
        metrics: dict[str, Any] | None = None,
        trial_dir: Path | None = None,
        error: str | None = None,
    ) -> str | None:
        """One child run for one trial; None (and nothing logged) when the trial id is already
        in this search. ``trial_dir`` holds the trial's metrics.json, subnetwork.json,
        weights.safetensors and history.json; ``error`` makes the run FAILED."""
        with self._lock:
            if trial_id in self._logged:
                return None
            files = _TrialFiles.read(trial_dir)
            metrics = {**files.metrics, **(metrics or {})}
            if trial_id in self._stale:
                self.client.delete_run(self._stale.pop(trial_id))
            tags = _child_tags(self.parent_run_id, trial_id, params, metrics, files, error)
            run_id = self.client.create_run(
                self.experiment_id, run_name=_run_name(trial_id, tags), tags=tags
            ).info.run_id
            self.client.log_batch(
                run_id,
                params=[Param(k, _param_value(v)) for k, v in params.items()],
                metrics=_metrics(metrics) + _history_metrics(files.history),
            )
            self._log_files(run_id, files, error)
            self.client.set_terminated(run_id, "FAILED" if error else "FINISHED")
            self._logged.add(trial_id)
            self._trial_ids[run_id] = trial_id
            if error is None:
                self._rows[run_id] = _row(run_id, trial_id, params, _numeric(metrics), tags)
            else:
                self._failed += 1
            self._update_front()
            self._log_parent_summary(hypervolume=error is None)
            return run_id

    def _log_files(self, run_id: str, files: _TrialFiles, error: str | None) -> None:
        for path in files.artifacts:
            self.client.log_artifact(run_id, str(path))
        if error is not None:
            self.client.log_text(run_id, error, "error.txt")

    def _objective_values(self, row: dict[str, Any]) -> list[float]:
        metrics = row["metrics"]
        return [_float_or_nan(metrics.get(key)) for key in self.objectives]

    def _update_front(self) -> None:
        """Recompute the front over all finished trials; retag only runs whose membership
        changed (usually one or two), so the cost per trial stays flat."""
        run_ids = list(self._rows)
        points = [self._objective_values(self._rows[r]) for r in run_ids]
        flags = non_dominated(points, list(self.objectives.values()))
        front = {r for r, on in zip(run_ids, flags, strict=True) if on}
        for run_id in front ^ self._front:
            self.client.set_tag(run_id, PARETO_TAG, "true" if run_id in front else "false")
        self._front = front

    def hypervolume(self) -> float | None:
        """Hypervolume of the finished trials over (val_accuracy, flops_ratio) with reference
        (0, 1): both axes are fractions, so searches on different models compare. None when
        the objectives have no such 2-D normalised form."""
        axes = _hypervolume_axes(self.objectives)
        if axes is None:
            return None
        keys, directions, reference = axes
        points = [
            [_float_or_nan(row["metrics"].get(k)) for k in keys] for row in self._rows.values()
        ]
        return hypervolume_2d(points, directions, reference)

    def front(self) -> list[dict[str, Any]]:
        """The current front as public rows."""
        with self._lock:
            return self._front_rows()

    def _front_rows(self) -> list[dict[str, Any]]:
        return [public_row(row) for run_id, row in self._rows.items() if run_id in self._front]

    def _log_parent_summary(self, *, hypervolume: bool) -> None:
        self.client.log_text(self.parent_run_id, front_csv(self._front_rows()), "pareto.csv")
        points = [
            {**public_row(row), "on_front": run_id in self._front}
            for run_id, row in self._rows.items()
        ]
        title = f"{self.experiment}: validation accuracy vs FLOPs"
        page = front_html(points, title=title, failed=self._failed)
        self.client.log_text(self.parent_run_id, page, "pareto.html")
        value = self.hypervolume() if hypervolume else None
        if value is not None and self._rows:
            self.client.log_metric(self.parent_run_id, "hypervolume", value, step=len(self._rows))

    def summary(self, run_id: str) -> dict[str, Any]:
        """What a progress line needs about a just-logged trial and the search so far."""
        with self._lock:
            row = self._rows.get(run_id, {})
            return {
                "run_id": run_id,
                "trial_id": self._trial_ids.get(run_id, row.get("trial_id")),
                "status": "FINISHED" if row else "FAILED",
                "val_accuracy": row.get("val_accuracy"),
                "flops": row.get("flops"),
                "flops_ratio": row.get("flops_ratio"),
                "on_front": run_id in self._front,
                "front_size": len(self._front),
                "finished": len(self._rows),
                "failed": self._failed,
                "hypervolume": self.hypervolume(),
            }

    def finish(self, *, status: str = "FINISHED", log_front_models: bool = True) -> list[dict]:
        """Log the final front's models in MLflow's PyTorch flavour (seconds each, hence only
        here and only for the front), end the parent run, and return the front rows."""
        with self._lock:
            rows = self._front_rows()
            if log_front_models:
                for row in rows:
                    self._log_model(row["run_id"])
            self.client.set_terminated(self.parent_run_id, status)
            return rows

    def _log_model(self, run_id: str) -> None:
        run = self.client.get_run(run_id)
        if MODEL_TAG in run.data.tags:
            return  # logged by an earlier finish of a resumed search
        try:
            model_uri = log_pytorch_model(self.client, run_id)
        except Exception as error:  # one model that does not export must not lose the search
            self.client.set_tag(run_id, "archsearch.model_error", _first_line(error)[:500])
            _warn(f"could not log the model of run {run_id} in MLflow: {_first_line(error)}")
            return
        self.client.set_tag(run_id, MODEL_TAG, model_uri)


def log_pytorch_model(client: mlflow.MlflowClient, run_id: str) -> str:
    """Rebuild a run's subnetwork from its own artifacts (subnetwork.json + safetensors, no
    pickles) and log it as ``model`` in the PyTorch flavour (torch.export format); returns its
    model URI."""
    import torch

    from archsearch.subnetwork import rebuild_subnetwork

    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="archsearch-model-") as tmp:
        folder = _run_artifacts(client, run, ("subnetwork.json", "weights.safetensors"), tmp)
        description = json.loads((folder / "subnetwork.json").read_text())
        model = rebuild_subnetwork(description, folder / "weights.safetensors")
    shape = tuple(description["model"]["input_shape"])
    # batch of 2: torch.export turns a batch of 1 into a constant instead of a dynamic dimension
    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0)).numpy()
    # Created here, in the run's experiment: left to itself, MLflow 3.17 files a model logged
    # for a run that is not the fluent "active run" under the Default experiment.
    logged = client.create_logged_model(
        run.info.experiment_id, name="model", source_run_id=run_id, params=run.data.params
    )
    with _global_tracking_uri(client.tracking_uri):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            run_id=run_id,
            model_id=logged.model_id,
            pip_requirements=_pip_requirements(),
        )
    return info.model_uri


def _run_artifacts(client: mlflow.MlflowClient, run: Run, names: tuple[str, ...], tmp: str) -> Path:
    """A local folder holding the named artifacts of a run: the run's own artifact folder for
    a local store (no copy, no progress bars), else a download into ``tmp``."""
    uri = run.info.artifact_uri
    if uri.startswith("file://"):
        return Path(urllib.request.url2pathname(urllib.parse.urlparse(uri).path))
    for name in names:
        client.download_artifacts(run.info.run_id, name, tmp)
    return Path(tmp)


def _pip_requirements() -> list[str]:
    """The flavour's own defaults, given explicitly: left to infer them, MLflow loads the model
    in a subprocess first, which costs 10-15 s per model here (vs. well under 1 s)."""
    return mlflow.pytorch.get_default_pip_requirements()


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """``mlflow.pytorch.log_model`` reads the tracking URI from MLflow's global state only;
    set it for the call and put back both it and the environment variable it writes."""
    from mlflow.tracking._tracking_service import utils

    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with utils._use_tracking_uri(uri):
            yield
    finally:
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env


# -- what one child run holds ----------------------------------------------------------------


class _TrialFiles:
    """The files a trial's checkpoint holds, read once (any of them may be missing: a failed
    trial usually has none)."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.subnetwork: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.artifacts: list[Path] = []

    @classmethod
    def read(cls, directory: Path | None) -> _TrialFiles:
        files = cls()
        if directory is None:
            return files
        directory = Path(directory)
        files.metrics = _read_json(directory / "metrics.json", {})
        files.subnetwork = _read_json(directory / "subnetwork.json", {})
        files.history = _read_json(directory / "history.json", [])
        names = ("subnetwork.json", "weights.safetensors", "history.json")
        files.artifacts = [directory / n for n in names if (directory / n).is_file()]
        return files


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def _child_tags(
    parent_run_id: str,
    trial_id: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    files: _TrialFiles,
    error: str | None,
) -> dict[str, str]:
    subnetwork = files.subnetwork
    trial_config = subnetwork.get("trial_config", {})
    tags = {
        PARENT_ID_TAG: parent_run_id,
        TRIAL_TAG: trial_id,
        PARETO_TAG: "false",
        "archsearch.gate": str(params.get("gate", subnetwork.get("gate", ""))),
        "archsearch.granularity": str(params.get("granularity", subnetwork.get("granularity", ""))),
    }
    if "penalty_lambda" in trial_config:
        tags["archsearch.penalty_lambda"] = str(trial_config["penalty_lambda"])
    if subnetwork.get("architecture"):
        tags["archsearch.architecture"] = subnetwork["architecture"]
    if metrics.get("node_ip"):
        tags["archsearch.node_ip"] = str(metrics["node_ip"])
    if files.history:
        tags["archsearch.phases"] = _phases(files.history)
    if error is not None:
        tags["archsearch.error"] = error_summary(error)
    return tags


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*")


def error_summary(text: str) -> str:
    """The line a user needs from a trial's error, for a tag the runs table can show: the
    exception line ending a traceback (Ray prefixes pages of its own frames), else the start
    of the text. The full text goes to ``error.txt``."""
    lines = [line.strip() for line in text.strip().splitlines()]
    exceptions = [line for line in lines if _EXCEPTION_LINE.match(line)]
    summary = exceptions[-1] if exceptions else text.strip()
    return summary[:ERROR_TAG_CHARS]


def _run_name(trial_id: str, tags: dict[str, str]) -> str:
    parts = [tags["archsearch.gate"], tags["archsearch.granularity"], trial_id]
    return "-".join(p for p in parts if p)


def _phases(history: list[dict[str, Any]]) -> str:
    """Which steps of the ``epoch/*`` curves belong to which phase, e.g.
    ``gated:1-3,finetune:4-4``: the curves run across phases on one step axis."""
    spans: list[list[Any]] = []
    for step, record in enumerate(history, start=1):
        phase = record.get("phase", "")
        if spans and spans[-1][0] == phase:
            spans[-1][2] = step
        else:
            spans.append([phase, step, step])
    return ",".join(f"{phase}:{first}-{last}" for phase, first, last in spans)


def _numeric(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}


def _metrics(metrics: dict[str, Any]) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(key, value, now, 0) for key, value in _numeric(metrics).items()]


def _history_metrics(history: list[dict[str, Any]]) -> list[Metric]:
    """Per-epoch curves as metric histories ``epoch/<name>``; the step counts epochs across
    phases (1, 2, ...), see the ``archsearch.phases`` tag."""
    now = int(time.time() * 1000)
    return [
        Metric(f"epoch/{key}", value, now, step)
        for step, record in enumerate(history, start=1)
        for key, value in _numeric(record).items()
        if key != "epoch"
    ]


def _hypervolume_axes(
    objectives: dict[str, str],
) -> tuple[list[str], list[str], list[float]] | None:
    """Normalised axes: a maximised metric as is (accuracy in [0, 1], reference 0), a
    minimised one as its ``_ratio`` to the dense network (reference 1)."""
    if len(objectives) != 2:
        return None
    keys, directions, reference = [], [], []
    for name, direction in objectives.items():
        keys.append(name if direction == "max" else f"{name.removesuffix('_ratio')}_ratio")
        directions.append(direction)
        reference.append(0.0 if direction == "max" else 1.0)
    return keys, directions, reference


def _float_or_nan(value: Any) -> float:
    number = _float_or_none(value)
    return number if number is not None else math.nan


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_PARAM_VALUE_CHARS]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _warn(message: str) -> None:
    print(f"archsearch: warning: {message}", file=sys.stderr)


# -- the Ray Tune callback -------------------------------------------------------------------


class _TrackingHooks:
    """Logs each trial into MLflow on the driver when it ends, finished or errored.

    A logging failure (a tracking server gone for a moment) is reported and counted in
    ``errors`` rather than raised: raising here would stop the whole search."""

    def __init__(
        self, tracker: SearchTracker, on_logged: Callable[[dict], None] | None = None
    ) -> None:
        self.tracker = tracker
        self.on_logged = on_logged
        self.errors: list[str] = []

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        metrics = {k: v for k, v in (trial.last_result or {}).items() if k not in _ray_keys()}
        checkpoint = trial.checkpoint
        if checkpoint is None:
            self._log(trial, metrics, None, None)
            return
        # as_directory: the folder itself for local storage, a temporary copy for remote
        with checkpoint.as_directory() as directory:
            self._log(trial, metrics, Path(directory), None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._log(trial, None, None, trial_error_text(trial))

    def _log(
        self, trial: Any, metrics: dict | None, directory: Path | None, error: str | None
    ) -> None:
        try:
            run_id = self.tracker.log_trial(
                trial.trial_id,
                dict(trial.config),
                metrics=metrics,
                trial_dir=directory,
                error=error,
            )
        except Exception as exc:
            message = f"trial {trial.trial_id} was not logged to MLflow: {_first_line(exc)}"
            self.errors.append(message)
            _warn(message)
            return
        if run_id is not None and self.on_logged is not None:
            self.on_logged(self.tracker.summary(run_id))


def _ray_keys() -> set[str]:
    """Keys Tune adds to every result: they describe the Ray run, not the trial."""
    from ray.tune import result

    added = {*result.AUTO_RESULT_KEYS, *result.DEBUG_METRICS, result.DONE, result.SHOULD_CHECKPOINT}
    return added - {result.NODE_IP}


def __getattr__(name: str) -> Any:
    """``TrackingCallback`` subclasses Ray Tune's ``Callback``, so it is defined on first use:
    the commands that only read the store (pareto, ui) then start without importing Ray."""
    if name != "TrackingCallback":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ray.tune import Callback

    class TrackingCallback(_TrackingHooks, Callback):
        __doc__ = _TrackingHooks.__doc__

    TrackingCallback.__qualname__ = "TrackingCallback"  # so pickle finds it by name
    globals()["TrackingCallback"] = TrackingCallback
    return TrackingCallback


def trial_error_text(trial: Any) -> str:
    """The error Tune recorded for a trial: the driver-side error file (written just before
    ``on_trial_error``), else the copy in the trial's storage."""
    path = trial.error_file
    if path and Path(path).is_file():
        text = Path(path).read_text()
    else:
        try:
            text = str(trial.get_error() or "")
        except Exception:
            text = ""
    text = _ANSI.sub("", text)  # Ray colours the actor name in its error text
    return text or f"trial {trial.trial_id} failed (Ray recorded no error text)"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
