"""Run ids as users type them (the full 32 hex digits, or any unique prefix of 6 or more),
and the files of the run one names.

``archsearch pareto`` prints the first 8 characters of each run id, and a user copies what
they see; every command that takes a run id resolves it here, against every active run of the
store, so one prefix means one run whichever experiment holds it.
"""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException

from archsearch.errors import first_line
from archsearch.tracking.store import (
    TrackingError,
    artifact_progress_bars_off,
    require_store,
    resolve_tracking_uri,
)

#: the shortest prefix accepted: 16^6 = 16.7 million values, unique in any real store
MIN_PREFIX = 6
#: MLflow run ids: a UUID4 as 32 lowercase hex digits
RUN_ID_LENGTH = 32
#: candidates named in an "ambiguous" message
_SHOWN = 5
_HEX = re.compile(r"[0-9a-f]+")


def resolve_run_id(client: mlflow.MlflowClient, text: str, uri: str) -> str:
    """The full id of the one active run whose id starts with ``text``. A full-length id is
    returned as it is (the caller's own lookup reports a missing one); a prefix that is too
    short, unknown or shared by several runs is one ``TrackingError`` line."""
    key = text.strip().lower()
    if not _HEX.fullmatch(key):
        raise TrackingError(
            f"{text!r} is neither a directory nor a run in MLflow store {uri}; pass a trial "
            f"folder, a run id (or its first {MIN_PREFIX}+ characters) from `archsearch "
            f"pareto`, or an experiment name with --max-flops-ratio or --min-accuracy (check "
            f"--tracking-uri)"
        )
    if len(key) >= RUN_ID_LENGTH:
        return key
    if len(key) < MIN_PREFIX:
        raise TrackingError(
            f"run id prefix {text!r} is too short: give at least {MIN_PREFIX} characters of "
            f"the run id (`archsearch pareto` prints 8)"
        )
    matches = _runs_starting_with(client, key)
    if not matches:
        raise TrackingError(
            f"{text!r} is neither a directory nor the start of a run id in MLflow store {uri}; "
            f"pass a trial folder, or a run id from `archsearch pareto` (check --tracking-uri)"
        )
    if len(matches) > 1:
        raise TrackingError(_ambiguous(text, matches))
    return matches[0].info.run_id


def _runs_starting_with(client: mlflow.MlflowClient, prefix: str) -> list[Run]:
    """Active runs of every active experiment whose id starts with ``prefix`` (hex only, so
    it holds no LIKE wildcard); enough of them to say "ambiguous" and name a few."""
    experiment_ids = _experiment_ids(client)
    if not experiment_ids:
        return []
    return list(
        client.search_runs(
            experiment_ids,
            filter_string=f"attributes.run_id LIKE '{prefix}%'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=_SHOWN + 1,
            order_by=["attributes.start_time DESC"],
        )
    )


def _experiment_ids(client: mlflow.MlflowClient) -> list[str]:
    ids, token = [], None
    while True:
        page = client.search_experiments(
            view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        ids.extend(e.experiment_id for e in page)
        token = page.token
        if not token:
            return ids


def _ambiguous(text: str, matches: list[Run]) -> str:
    """One line naming the candidates (newest first) by full id and run name, so the user can
    copy the one they meant."""
    shown = [
        f"{run.info.run_id} ({run.info.run_name})" if run.info.run_name else run.info.run_id
        for run in matches[:_SHOWN]
    ]
    more = " and more" if len(matches) > _SHOWN else ""
    return (
        f"run id prefix {text!r} is ambiguous: it matches {', '.join(shown)}{more}; give "
        f"more characters of the one you mean"
    )


def download_run(run_id: str, names: tuple[str, ...], into: Path, tracking_uri: str | None) -> str:
    """The named files from the root of a run's artifacts, where the search logs them, for
    ``archsearch export RUN_ID``; returns the full run id ``run_id`` (maybe a prefix) named.
    The store, the run and its artifact list are checked first, so each failure is one
    ``TrackingError`` line naming what is missing where."""
    uri = resolve_tracking_uri(tracking_uri)
    try:
        require_store(uri)  # fails fast instead of creating an empty store or retrying minutes
    except TrackingError as error:
        raise TrackingError(f"{run_id!r} is not a directory, and as a run id: {error}") from None
    client = mlflow.MlflowClient(uri)
    run_id = resolve_run_id(client, run_id, uri)
    present = _artifact_names(client, run_id, uri)
    missing = [name for name in names if name not in present]
    if missing:
        raise TrackingError(
            f"MLflow run {run_id} in {uri} has no {' or '.join(missing)} artifact (it has: "
            f"{', '.join(sorted(present)) or 'nothing'}); export the run of a finished trial"
        )
    try:
        with artifact_progress_bars_off():
            for name in names:
                mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=name, dst_path=str(into), tracking_uri=uri
                )
    except MlflowException as error:
        raise TrackingError(
            f"cannot download the artifacts of run {run_id} from {uri}: {first_line(error)}"
        ) from None
    return run_id


def _artifact_names(client: mlflow.MlflowClient, run_id: str, uri: str) -> set[str]:
    """The files at the root of an existing run's artifacts."""
    try:
        client.get_run(run_id)
        return {info.path for info in client.list_artifacts(run_id)}
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise TrackingError(
                f"{run_id!r} is neither a directory nor a run in MLflow store {uri}; pass a "
                f"trial folder, or a run id from `archsearch pareto` (check --tracking-uri)"
            ) from None
        raise TrackingError(f"cannot read run {run_id} from {uri}: {first_line(error)}") from None
