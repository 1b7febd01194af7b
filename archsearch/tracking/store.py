"""The MLflow store: which one, whether it answers, and the queries every reader shares.

Layout: one experiment per search space name, one parent run per search (resume reuses it),
one child run per trial tagged with its Ray trial id. The search writes it
(``tracking.tracker``); ``archsearch pareto``, ``ui``, ``dashboard`` and ``export`` read it
through the functions here, so a wrong URI or a missing experiment reads the same in each.

Everything goes through an explicit ``MlflowClient``: Ray's driver calls callbacks from more
than one thread, and MLflow's fluent API keeps a global "active run".
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import mlflow
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

from archsearch.errors import ArchSearchError, first_line
from archsearch.pareto import parse_objectives
from archsearch.store_file import DEFAULT_DB as DEFAULT_DB  # re-exported: one home
from archsearch.store_file import resolve_tracking_uri, sqlite_path
from archsearch.tracking.retry import RetryingClient, drop_busy_records, init_lock, retry_busy


class TrackingError(ArchSearchError):
    """A tracking store that cannot be used, or an experiment or run that is not in it."""


#: artifacts of a SQLite store live in this folder beside the database file
ARTIFACT_DIR = "mlruns"

PARENT_TAG = "archsearch.parent"
#: on the parent run: the search's objectives (``pareto.format_objectives``), so commands that
#: read the store back compute the fronts the search did
OBJECTIVES_TAG = "archsearch.objectives"
TRIAL_TAG = "archsearch.trial_id"
PARETO_TAG = "archsearch.pareto"
MODEL_TAG = "archsearch.model_uri"
PARENT_ID_TAG = "mlflow.parentRunId"
#: on a parent run whose search started from trained dense weights: how its reference was got
REFERENCE_TAG = "archsearch.reference"


# -- which store, and whether it answers ---------------------------------------------------


def artifact_root(uri: str) -> Path | None:
    """Where a SQLite store's artifacts go: ``mlruns/`` beside the database file. MLflow's own
    default is ``./mlruns`` of whichever process first opened the store, which would scatter
    artifacts when the search and the UI run from different folders. None for servers: the
    server decides."""
    path = sqlite_path(uri)
    return path.parent / ARTIFACT_DIR if path is not None else None


def server_error(uri: str, timeout: float = 3.0) -> str | None:
    """Why a tracking server is not answering, None when it answers (or ``uri`` is no
    server). Any HTTP answer (even 401/404) counts: only the connection matters here."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))


def check_reachable(uri: str, timeout: float = 3.0) -> None:
    """Fail fast, before any trial runs, when a tracking server is not answering."""
    reason = server_error(uri, timeout)
    if reason is not None:
        raise TrackingError(
            f"MLflow tracking server {uri} is not reachable ({reason}); start it with `mlflow "
            f"server` (for other machines with authentication: README, 'Running on a cluster') "
            f"or check --tracking-uri"
        ) from None


def require_store(uri: str) -> None:
    """For commands that only read: a missing SQLite file means a wrong folder or URI, and
    opening it would silently create an empty store (and take seconds to do so)."""
    path = sqlite_path(uri)
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
            f"cannot use MLflow store {uri}: {first_line(error)}; check --tracking-uri"
        ) from None


def open_client(uri: str) -> mlflow.MlflowClient:
    """A client on ``uri`` whose calls wait out a busy SQLite file (``retry_busy``). A SQLite
    store's folder is created so a fresh store just works, and its tables are created by one
    process at a time: MLflow migrates an empty database without a lock, so two searches
    starting together on a new store would both run the migrations."""
    logging.getLogger("mlflow.store.db.utils").addFilter(drop_busy_records)
    path = sqlite_path(uri)
    if path is None:
        return RetryingClient(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    with init_lock(path):
        return retry_busy(RetryingClient, uri)


def prepare_store(uri: str) -> threading.Thread:
    """Create a new SQLite store's tables in a background thread (2.5-4 s of MLflow's
    migrations on the 2-vCPU machine), so a search overlaps them with Ray's start-up; join
    the thread before opening the store. An error is left for that opening to raise."""

    def create() -> None:
        if sqlite_path(uri) is not None:  # a server's store exists already
            with contextlib.suppress(Exception):
                open_client(uri)

    thread = threading.Thread(target=create, name="archsearch-store", daemon=True)
    thread.start()
    return thread


# -- experiments and runs ------------------------------------------------------------------


def slug(name: str, fallback: str) -> str:
    """``name`` as a file or folder name (experiment folders, suggested export files):
    anything but letters, digits and ``._-`` becomes ``_``; ``fallback`` if nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or fallback


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


def get_or_create_experiment(client: mlflow.MlflowClient, name: str) -> str:
    """The experiment a search logs to, restored if deleted, created with its artifacts
    under the store's own ``mlruns/`` (see ``artifact_root``)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage != "active":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    root = artifact_root(client.tracking_uri)
    location = (root / slug(name, "experiment")).as_uri() if root is not None else None
    return client.create_experiment(name, artifact_location=location)


def latest_parent_run(client: mlflow.MlflowClient, experiment_id: str) -> Run | None:
    """The parent run of the most recent search of an experiment (by start time)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.{PARENT_TAG} = 'true'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0] if runs else None


def child_runs(
    client: mlflow.MlflowClient, experiment_id: str, parent_run_id: str
) -> Iterator[Run]:
    """Every child run of a search, page by page (searches can have thousands of trials)."""
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.{PARENT_ID_TAG} = '{parent_run_id}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        yield from page
        token = page.token
        if not token:
            return


class StoredSearch(NamedTuple):
    """One search as the read-only commands open it."""

    client: mlflow.MlflowClient
    tracking_uri: str
    experiment_id: str
    parent: Run

    @property
    def objectives(self) -> dict[str, str]:
        """The objectives the search ran with (the two defaults for a search before the tag)."""
        return parse_objectives(self.parent.data.tags.get(OBJECTIVES_TAG))


def open_search(
    experiment: str, tracking_uri: str | None, *, parent_run_id: str | None = None
) -> StoredSearch:
    """The search ``parent_run_id`` of ``experiment``, else its most recent one, in an
    existing store; every way this fails is one ``TrackingError`` line."""
    uri = resolve_tracking_uri(tracking_uri)
    require_store(uri)
    with store_errors(uri):
        client = open_client(uri)
        experiment_id = find_experiment_id(client, experiment)
        if parent_run_id:
            parent = client.get_run(parent_run_id)
        else:
            parent = latest_parent_run(client, experiment_id)
    if parent is None:
        raise TrackingError(
            f"experiment {experiment!r} in {uri} holds no archsearch search; run "
            f"`archsearch search` on its space first"
        )
    return StoredSearch(client, uri, experiment_id, parent)


# -- artifacts -------------------------------------------------------------------------------


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


def local_artifact_dir(artifact_uri: str | None) -> Path | None:
    """A run's artifact folder when it is on this machine, read in place (no copy, no progress
    bars); None otherwise (a server may hand out file: URIs of its own disk: those are
    downloaded instead)."""
    if not artifact_uri or not artifact_uri.startswith("file:"):
        return None
    folder = Path(urllib.request.url2pathname(urllib.parse.urlparse(artifact_uri).path))
    return folder if folder.is_dir() else None


def run_artifacts(
    client: mlflow.MlflowClient, run: Run, names: tuple[str, ...], into: Path
) -> Path:
    """A local folder holding the named artifacts of a run: its own artifact folder for a
    local store, else a download of each into ``into``."""
    folder = local_artifact_dir(run.info.artifact_uri)
    if folder is not None:
        return folder
    for name in names:
        client.download_artifacts(run.info.run_id, name, str(into))
    return into


def download_artifact(
    client: mlflow.MlflowClient, run_id: str, name: str, into: Path
) -> Path | None:
    """One artifact of a run downloaded into ``into``; None when the run has no such file or
    the store does not hand it out (the caller shows what it can without it)."""
    try:
        return Path(client.download_artifacts(run_id, name, str(into)))
    except (MlflowException, OSError):
        return None


def artifact_names(client: mlflow.MlflowClient, run_id: str) -> set[str]:
    """The files at the root of a run's artifacts; empty when the store does not list them."""
    try:
        return {info.path for info in client.list_artifacts(run_id)}
    except (MlflowException, OSError):
        return set()
