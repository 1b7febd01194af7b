"""MLflow tracking of a search: the only package that imports MLflow.

- ``store``: which store (URIs, SQLite paths, artifact root), whether it answers, the client,
  experiment and run queries, artifact downloads (also for ``archsearch export`` and the
  dashboard);
- ``rows``: a run as a row of the front, and the front read back from the store;
- ``run_ids``: a run id or a unique prefix of it resolved to its run, and that run's files
  (``archsearch export RUN_ID``);
- ``ui_links``: the MLflow UI's own URLs (a run, the runs table filtered, an artifact);
- ``tracker``: ``SearchTracker``, which writes a search's runs as its trials end (no Ray: the
  search's callback calls it), with ``child_run`` building what one trial's run holds and
  ``endings`` how it ended (finished, infeasible, stopped early, failed);
- ``model_log``: a front run's subnetwork as an MLflow PyTorch-flavour model;
- ``outage``: writes that wait while a tracking server is away; ``retry``: a SQLite file
  other searches keep busy; ``driver``: one live search per name.

Importing this package imports neither Ray nor Torch, so the read-only commands start fast.
"""

from archsearch.run_rows import REFERENCE_KEYS, param_from_text, public_row, reference_from_run
from archsearch.tracking.model_log import log_pytorch_model
from archsearch.tracking.outage import StoreOutage
from archsearch.tracking.rows import (
    front_candidate,
    front_rows,
    rows_of_search,
    search_reference,
    search_rows,
)
from archsearch.tracking.run_ids import MIN_PREFIX, download_run, resolve_run_id
from archsearch.tracking.store import (
    DEFAULT_DB,
    MODEL_TAG,
    OBJECTIVES_TAG,
    PARENT_ID_TAG,
    PARENT_TAG,
    PARETO_TAG,
    REFERENCE_TAG,
    TRIAL_TAG,
    StoredSearch,
    TrackingError,
    artifact_names,
    artifact_progress_bars_off,
    artifact_root,
    check_reachable,
    child_runs,
    download_artifact,
    find_experiment_id,
    latest_parent_run,
    local_artifact_dir,
    open_client,
    open_search,
    prepare_store,
    require_store,
    resolve_tracking_uri,
    run_artifacts,
    slug,
    store_errors,
)
from archsearch.tracking.tracker import SearchTracker
from archsearch.tracking.ui_links import (
    SEARCH_FILTER_PARAM,
    artifact_url,
    experiment_url,
    filtered_runs_url,
    front_filter,
    run_url,
    runs_filter,
)

__all__ = [
    "DEFAULT_DB",
    "MIN_PREFIX",
    "MODEL_TAG",
    "OBJECTIVES_TAG",
    "PARENT_ID_TAG",
    "PARENT_TAG",
    "PARETO_TAG",
    "REFERENCE_KEYS",
    "REFERENCE_TAG",
    "SEARCH_FILTER_PARAM",
    "TRIAL_TAG",
    "SearchTracker",
    "StoreOutage",
    "StoredSearch",
    "TrackingError",
    "artifact_names",
    "artifact_progress_bars_off",
    "artifact_root",
    "artifact_url",
    "check_reachable",
    "child_runs",
    "download_artifact",
    "download_run",
    "experiment_url",
    "filtered_runs_url",
    "find_experiment_id",
    "front_candidate",
    "front_filter",
    "front_rows",
    "latest_parent_run",
    "local_artifact_dir",
    "log_pytorch_model",
    "open_client",
    "open_search",
    "param_from_text",
    "prepare_store",
    "public_row",
    "reference_from_run",
    "require_store",
    "resolve_run_id",
    "resolve_tracking_uri",
    "rows_of_search",
    "run_artifacts",
    "run_url",
    "runs_filter",
    "search_reference",
    "search_rows",
    "slug",
    "store_errors",
]
