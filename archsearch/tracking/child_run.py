"""What one trial's child run holds: params, tags, metrics, curves and files.

Built from what the search hands over (the sampled params, Tune's last result, the trial's
checkpoint folder, an error text), so a worker never needs access to the store. Separate from
``tracker`` so the tracker is only bookkeeping: which trials are logged, which are on the front.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param

from archsearch.cost_gap import describe_cost_gap
from archsearch.errors import error_summary
from archsearch.tracking.store import PARENT_ID_TAG, PARETO_TAG, TRIAL_TAG

#: MLflow's limit on a param value
PARAM_VALUE_CHARS = 6000
#: the files of a trial's folder that go into its run
ARTIFACTS = ("subnetwork.json", "weights.safetensors", "history.json")


class TrialFiles:
    """The files a trial's checkpoint holds, read once (any of them may be missing: a failed
    trial usually has none)."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.subnetwork: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.artifacts: list[Path] = []

    @classmethod
    def read(cls, directory: Path | None) -> TrialFiles:
        files = cls()
        if directory is None:
            return files
        directory = Path(directory)
        files.metrics = _read_json(directory / "metrics.json", {})
        files.subnetwork = _read_json(directory / "subnetwork.json", {})
        files.history = _read_json(directory / "history.json", [])
        files.artifacts = [directory / n for n in ARTIFACTS if (directory / n).is_file()]
        return files

    @property
    def trial_config(self) -> dict[str, Any]:
        """The full ``TrialConfig`` the trial ran with, as its subnetwork.json records it."""
        return self.subnetwork.get("trial_config", {})


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def child_params(params: dict[str, Any], files: TrialFiles) -> dict[str, Any]:
    """The run's params: the sampled ones, plus the penalty weight the trial ran with when
    the space fixed it rather than sampling it (so every run has ``penalty.lambda``)."""
    fixed = files.trial_config.get("penalty_lambda")
    if "penalty.lambda" in params or fixed is None:
        return dict(params)
    return {**params, "penalty.lambda": fixed}


def child_tags(
    parent_run_id: str,
    trial_id: str,
    params: dict[str, Any],
    metrics: dict[str, Any],
    files: TrialFiles,
    error: str | None,
) -> dict[str, str]:
    """The tags that place the run in its search and describe the trial for the runs table."""
    subnetwork = files.subnetwork
    tags = {
        PARENT_ID_TAG: parent_run_id,
        TRIAL_TAG: trial_id,
        PARETO_TAG: "false",
        "archsearch.gate": str(params.get("gate", subnetwork.get("gate", ""))),
        "archsearch.granularity": str(params.get("granularity", subnetwork.get("granularity", ""))),
    }
    if subnetwork.get("architecture"):
        tags["archsearch.architecture"] = subnetwork["architecture"]
    if metrics.get("node_ip"):
        tags["archsearch.node_ip"] = str(metrics["node_ip"])
    if files.history:
        tags["archsearch.phases"] = _phases(files.history)
    if metrics.get("latency_runtime"):  # how the latency metrics were measured, and where
        tags["archsearch.latency"] = str(metrics["latency_runtime"])
    if metrics.get("cost_gap_large"):
        tags["archsearch.cost_gap"] = describe_cost_gap(
            metrics["expected_cost_ratio"], metrics["hard_cost_ratio"]
        )
    if error is not None:
        tags["archsearch.error"] = error_summary(error)
    return tags


def write_child_run(
    client: mlflow.MlflowClient,
    experiment_id: str,
    content: tuple[dict[str, Any], dict[str, Any], dict[str, str]],
    files: TrialFiles,
    error: str | None,
    on_created: Callable[[str], None] = lambda run_id: None,
) -> str:
    """Create, fill and end one child run (FAILED when ``error``) from its (params, metrics,
    tags); returns its id. ``on_created`` learns the id first, so a write cut off half-way
    (a server gone) is known and replaced when the trial is written again."""
    params, metrics, tags = content
    run_id = client.create_run(experiment_id, run_name=_run_name(tags), tags=tags).info.run_id
    on_created(run_id)
    client.log_batch(
        run_id,
        params=[Param(k, param_value(v)) for k, v in params.items()],
        metrics=_metrics(metrics) + _history_metrics(files.history),
    )
    for path in files.artifacts:
        client.log_artifact(run_id, str(path))
    if error is not None:
        client.log_text(run_id, error, "error.txt")  # the full text; the tag has one line
    client.set_terminated(run_id, "FAILED" if error else "FINISHED")
    return run_id


def _run_name(tags: dict[str, str]) -> str:
    parts = [tags["archsearch.gate"], tags["archsearch.granularity"], tags[TRIAL_TAG]]
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


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers among Tune's reported values (it also reports node ips, dates, flags)."""
    return {key: float(value) for key, value in metrics.items() if isinstance(value, (int, float))}


def _metrics(metrics: dict[str, Any]) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(key, value, now, 0) for key, value in numeric(metrics).items()]


def _history_metrics(history: list[dict[str, Any]]) -> list[Metric]:
    """Per-epoch curves as metric histories ``epoch/<name>``; the step counts epochs across
    phases (1, 2, ...), see the ``archsearch.phases`` tag."""
    now = int(time.time() * 1000)
    return [
        Metric(f"epoch/{key}", value, now, step)
        for step, record in enumerate(history, start=1)
        for key, value in numeric(record).items()
        if key != "epoch"
    ]


def flatten(params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as dotted param names, e.g. ``{"sampler": {"name": ..}}`` →
    ``sampler.name``."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def param_value(value: Any) -> str:
    """A param as MLflow stores it: text, JSON for anything else, cut at MLflow's limit."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:PARAM_VALUE_CHARS]
