"""MLflow tracking of a search: the only package that imports MLflow.

- ``store``: which store (URIs, SQLite paths, artifact root), whether it answers, the client,
  experiment and run queries, artifact downloads (also for ``archsearch export`` and the
  dashboard);
- ``rows``: a run as a row of the front, and the front read back from the store;
- ``tracker``: ``SearchTracker``, which writes a search's runs as its trials end (no Ray: the
  search's callback calls it), with ``child_run`` building what one trial's run holds;
- ``model_log``: a front run's subnetwork as an MLflow PyTorch-flavour model;
- ``outage``: writes that wait while a tracking server is away; ``retry``: a SQLite file
  other searches keep busy; ``driver``: one live search per name.

Importing this package imports neither Ray nor Torch, so the read-only commands start fast.
"""

from archsearch.tracking.model_log import log_pytorch_model
from archsearch.tracking.outage import StoreOutage
from archsearch.tracking.rows import (
    REFERENCE_KEYS,
    front_rows,
    param_from_text,
    public_row,
    reference_from_run,
    search_reference,
)
from archsearch.tracking.store import (
    DEFAULT_DB,
    MODEL_TAG,
    PARENT_ID_TAG,
    PARENT_TAG,
    PARETO_TAG,
    REFERENCE_TAG,
    TRIAL_TAG,
    StoredSearch,
    TrackingError,
    artifact_progress_bars_off,
    artifact_root,
    check_reachable,
    child_runs,
    download_artifact,
    download_run,
    find_experiment_id,
    latest_parent_run,
    local_artifact_dir,
    open_client,
    open_search,
    require_store,
    resolve_tracking_uri,
    run_artifacts,
    slug,
    store_errors,
)
from archsearch.tracking.tracker import SearchTracker

__all__ = [
    "DEFAULT_DB",
    "MODEL_TAG",
    "PARENT_ID_TAG",
    "PARENT_TAG",
    "PARETO_TAG",
    "REFERENCE_KEYS",
    "REFERENCE_TAG",
    "TRIAL_TAG",
    "SearchTracker",
    "StoreOutage",
    "StoredSearch",
    "TrackingError",
    "artifact_progress_bars_off",
    "artifact_root",
    "check_reachable",
    "child_runs",
    "download_artifact",
    "download_run",
    "find_experiment_id",
    "front_rows",
    "latest_parent_run",
    "local_artifact_dir",
    "log_pytorch_model",
    "open_client",
    "open_search",
    "param_from_text",
    "public_row",
    "reference_from_run",
    "require_store",
    "resolve_tracking_uri",
    "run_artifacts",
    "search_reference",
    "slug",
    "store_errors",
]
