"""The Pareto dashboard: one self-contained HTML page per search for picking a subnetwork.

``collect`` reads the most recent search of an experiment into a JSON-able payload, ``render``
pours it into the bundled template (``dashboards/pareto_dashboard.html``: inline CSS, inline JS
that draws SVG by hand). The page fetches nothing, so it works offline, as a mailed file and
as the ``dashboard.html`` artifact of the search's parent run.

The front is recomputed here from the runs' metrics rather than read from the
``archsearch.pareto`` tags: a dashboard of a search that is still running (or crashed before
retagging) must still agree with its own points. So is the front of each granularity (a trial
compared only with trials of its own granularity, ``on_granularity_front``), which the page
draws as one toggleable line per granularity next to the overall front. Both are over the
objectives the search ran with (its ``archsearch.objectives`` tag; accuracy and FLOPs for a
search older than the tag), so a latency search's page marks its latency front.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from archsearch.pareto import non_dominated, non_dominated_within
from archsearch.tracking import (
    DEFAULT_DB,
    artifact_progress_bars_off,
    child_runs,
    download_artifact,
    local_artifact_dir,
    open_search,
    param_from_text,
    reference_from_run,
    run_url,
    slug,
)
from archsearch.tracking.endings import INFEASIBLE_TAG, STOPPED_BY_TAG, STOPPED_TAG

PAYLOAD_FORMAT = "archsearch.dashboard/1"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
ARTIFACT_NAME = "dashboard.html"
_PLACEHOLDER = "__ARCHSEARCH_DASHBOARD_PAYLOAD__"
_LAYER_KEYS = ("name", "type", "in", "out", "dense_in", "dense_out", "density", "flops")
_FAILED = ("FAILED", "KILLED")
#: parallel artifact downloads from a tracking server (one small JSON per run)
_DOWNLOAD_THREADS = 8


@dataclass(frozen=True)
class DashboardReport:
    """What the command prints: where the page went, how big it is, what it counts."""

    path: Path
    bytes: int
    counts: dict[str, int]

    def summary(self) -> str:
        return counts_line(self.counts)


def counts_line(counts: dict[str, int]) -> str:
    """The header line users read first, e.g. ``24 trials: 22 finished, 2 failed; front: 5``."""
    line = f"{counts['trials']} trials: {counts['finished']} finished, {counts['failed']} failed"
    if counts.get("stopped"):
        line += f", {counts['stopped']} stopped early"
    if counts.get("infeasible"):
        line += f", {counts['infeasible']} infeasible"
    if counts.get("running"):
        line += f", {counts['running']} running"
    return f"{line}; front: {counts['front']}"


# -- collect ---------------------------------------------------------------------------------


def collect(
    experiment: str,
    tracking_uri: str | None,
    *,
    ui_url: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Everything the page shows about one search (the most recent one of ``experiment``, or
    ``parent_run_id``), as plain JSON types. Reads each run's ``subnetwork.json`` once."""
    search = open_search(experiment, tracking_uri, parent_run_id=parent_run_id)
    client, uri, experiment_id, parent = search
    objectives = search.objectives
    runs = sorted(
        child_runs(client, experiment_id, parent.info.run_id), key=lambda r: r.info.start_time
    )
    subnetworks = _read_subnetworks(client, runs)
    ui_base = (ui_url or _default_ui_url(uri)).rstrip("/")
    flags = _export_flags(uri)
    rows = [
        _run_row(run, subnetworks.get(run.info.run_id), ui_base, experiment_id, flags)
        for run in runs
    ]
    _mark_front(rows, objectives)
    _place_stopped(rows)
    return _json_safe(
        {
            "format": PAYLOAD_FORMAT,
            "experiment": experiment,
            "experiment_id": experiment_id,
            "parent_run_id": parent.info.run_id,
            "parent_run_name": parent.info.run_name,
            "parent_url": run_url(ui_base, experiment_id, parent.info.run_id),
            "tracking_uri": uri,
            "ui_base": ui_base,
            "generated": datetime.now(UTC).isoformat(timespec="seconds"),
            "objectives": objectives,
            "counts": _counts(rows),
            "hypervolume": _hypervolume_history(client, parent.info.run_id),
            # the dense reference (trained once by the search, or loaded from init.weights):
            # a horizontal line, and each trial's test accuracy below it in its details
            "reference": reference_from_run(parent),
            "runs": rows,
        }
    )


def _default_ui_url(uri: str) -> str:
    """A tracking server serves its own UI; a local store is opened with ``archsearch ui``."""
    return uri if uri.startswith(("http://", "https://")) else DEFAULT_UI_URL


def _export_flags(uri: str) -> str:
    """``--tracking-uri`` for the export command, unless the store is the default one of the
    folder the dashboard was built in (then the bare command works there)."""
    default = f"sqlite:///{Path(DEFAULT_DB).absolute()}"
    return "" if uri == default else f" --tracking-uri {shlex.quote(uri)}"


def _run_row(
    run: Any, subnetwork: dict[str, Any] | None, ui_base: str, experiment_id: str, flags: str
) -> dict[str, Any]:
    info, data = run.info, run.data
    tags = {k: v for k, v in data.tags.items() if k.startswith("archsearch.")}
    row = {
        "run_id": info.run_id,
        "name": info.run_name or info.run_id[:8],
        "status": info.status,
        "trial_id": tags.get("archsearch.trial_id", ""),
        "gate": tags.get("archsearch.gate") or (subnetwork or {}).get("gate") or "?",
        "granularity": tags.get("archsearch.granularity")
        or (subnetwork or {}).get("granularity")
        or "?",
        # the latest values of the per-epoch curves say little; the MLflow link has them all
        "metrics": {k: v for k, v in data.metrics.items() if not k.startswith("epoch/")},
        "params": {k: param_from_text(v) for k, v in data.params.items()},
        "tags": tags,
        "url": run_url(ui_base, experiment_id, info.run_id),
        "on_front": False,
        # on the front of its own granularity (compared only with trials of that granularity)
        "on_granularity_front": False,
        # stopped early (a rung, the time budget): drawn apart, where it stood when stopped
        "stopped_at_epoch": _int(tags.get(STOPPED_TAG)),
        "stopped_by": tags.get(STOPPED_BY_TAG),
        # finished but violating a constraint: drawn marked, never on a front
        "infeasible": tags.get(INFEASIBLE_TAG),
    }
    if subnetwork:
        row.update(_subnetwork_fields(subnetwork))
    if info.status == "FINISHED":
        name = slug(row["name"], "model")
        row["export"] = f"archsearch export {info.run_id} --format onnx -o {name}.onnx{flags}"
    return row


def _subnetwork_fields(subnetwork: dict[str, Any]) -> dict[str, Any]:
    flops = subnetwork.get("flops") or {}
    return {
        "architecture": subnetwork.get("architecture"),
        "layers": [
            {key: layer.get(key) for key in _LAYER_KEYS} for layer in subnetwork.get("layers", [])
        ],
        "densities": subnetwork.get("densities") or {},
        "flops_convention": flops.get("convention"),
        "input_shape": flops.get("input_shape"),
    }


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or Infinity (the browser's JSON.parse rejects them): a diverged metric
    is shown as missing."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _place_stopped(rows: list[dict[str, Any]]) -> None:
    """Where a stopped trial stood: its gated model's validation accuracy and its hard-mask
    cost ratio times the dense FLOPs (that of the finished trials; the ratio is the penalty's
    cost, FLOPs unless the space counts parameters)."""
    dense = next((r["metrics"]["dense_flops"] for r in rows if "dense_flops" in r["metrics"]), None)
    for row in rows:
        if row["stopped_at_epoch"] is None:
            continue
        ratio = row["metrics"].get("stopped.hard_cost_ratio")
        row["at_stop"] = {
            "val_accuracy": row["metrics"].get("stopped.val_accuracy"),
            "flops": ratio * dense if ratio is not None and dense is not None else None,
        }


def _mark_front(rows: list[dict[str, Any]], objectives: dict[str, str]) -> None:
    """The front over every finished feasible trial, and the front of each granularity, on
    the search's objectives: each one is the run metric of its name (``latency`` included,
    logged beside ``latency_ratio``); a trial without one is never on a front."""
    finished = [r for r in rows if r["status"] == "FINISHED" and not r["infeasible"]]
    points = [[_nan(r["metrics"].get(k)) for k in objectives] for r in finished]
    directions = list(objectives.values())
    overall = non_dominated(points, directions)
    own = non_dominated_within(points, directions, [r["granularity"] for r in finished])
    for row, on_front, on_own in zip(finished, overall, own, strict=True):
        row["on_front"] = on_front
        row["on_granularity_front"] = on_own


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    stopped = [r for r in rows if r["stopped_at_epoch"] is not None]
    statuses = [r["status"] for r in rows if r["stopped_at_epoch"] is None]
    return {
        "trials": len(rows),
        "finished": statuses.count("FINISHED"),
        "failed": sum(s in _FAILED for s in statuses),
        "running": sum(s not in (*_FAILED, "FINISHED") for s in statuses),
        "stopped": len(stopped),
        "infeasible": sum(bool(r["infeasible"]) for r in rows),
        "front": sum(r["on_front"] for r in rows),
    }


def _hypervolume_history(client: Any, parent_run_id: str) -> list[list[float]]:
    """``[finished trials, hypervolume]`` pairs as the search logged them, one per step."""
    history = client.get_metric_history(parent_run_id, "hypervolume")
    by_step = {m.step: m.value for m in sorted(history, key=lambda m: m.timestamp)}
    return [[step, by_step[step]] for step in sorted(by_step) if math.isfinite(by_step[step])]


# -- artifacts -------------------------------------------------------------------------------


def _read_subnetworks(client: Any, runs: list[Any]) -> dict[str, dict[str, Any]]:
    """``subnetwork.json`` of every run that has one. A local store's files are read in place
    (no copy); a server's are downloaded in parallel, since each is one round trip."""
    local = {r.info.run_id: local_artifact_dir(r.info.artifact_uri) for r in runs}
    found = {
        run_id: _read_json(folder / "subnetwork.json")
        for run_id, folder in local.items()
        if folder is not None
    }
    # a failed trial has no subnetwork.json: no round trip to learn that
    remote = [
        r.info.run_id for r in runs if local[r.info.run_id] is None and r.info.status == "FINISHED"
    ]
    if remote:
        with (
            tempfile.TemporaryDirectory(prefix="archsearch-dashboard-") as tmp,
            artifact_progress_bars_off(),
            ThreadPoolExecutor(_DOWNLOAD_THREADS) as pool,
        ):
            downloaded = pool.map(lambda r: _download(client, r, Path(tmp) / r), remote)
            found.update(zip(remote, downloaded, strict=True))
    return {run_id: sub for run_id, sub in found.items() if sub}


def _download(client: Any, run_id: str, into: Path) -> dict[str, Any] | None:
    into.mkdir(parents=True)
    path = download_artifact(client, run_id, "subnetwork.json", into)
    # None: no subnetwork to show; the run's link still works
    return _read_json(path) if path is not None else None


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# -- render and write --------------------------------------------------------------------------


def render(payload: dict[str, Any]) -> str:
    """The template with the payload inlined as JSON. ``<``, ``>`` and ``&`` are escaped so no
    run name or error text can close the script element it lives in."""
    template = resources.files("dashboards").joinpath("pareto_dashboard.html").read_text("utf-8")
    data = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    data = data.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    head, placeholder, tail = template.partition(_PLACEHOLDER)
    if not placeholder:
        raise RuntimeError(f"dashboard template lacks the {_PLACEHOLDER} placeholder")
    return head + data + tail


def write_dashboard(
    experiment: str, output: Path, tracking_uri: str | None, *, ui_url: str | None = None
) -> DashboardReport:
    """Collect, render and write the page; written beside ``output`` then renamed, so a
    reader never sees half a page and an error leaves nothing behind."""
    payload = collect(experiment, tracking_uri, ui_url=ui_url)
    page = render(payload).encode("utf-8")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, staged = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(page)
        os.replace(staged, output)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return DashboardReport(path=output, bytes=len(page), counts=payload["counts"])


def log_dashboard(client: Any, parent_run_id: str, html: str) -> None:
    """Attach the page to the search's parent run as ``dashboard.html`` (beside pareto.csv),
    so it is one click away in the MLflow UI. ``client`` is an ``mlflow.MlflowClient``."""
    client.log_text(parent_run_id, html, ARTIFACT_NAME)
