"""A trial reports after each gated epoch (its gated model's validation accuracy in eval mode,
the cost of its current hard masks; no checkpoint) and last its result, with its files. Only
that last report is a result: what MLflow and Optuna record is it, never an epoch report.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import mlflow
import optuna
from conftest import tiny_space, write_space

# archsearch.search first: it settles Ray's token authentication before Ray loads
from archsearch.search.callbacks import LiveCallbacks, TrackingCallback, live_callbacks
from archsearch.search.cluster import ray_session
from archsearch.search.reports import EPOCH_KEY, epoch_report, is_final, stopped_epoch
from archsearch.search.searcher import StudySearch
from archsearch.search.worker import trainable
from archsearch.space import load_spec
from archsearch.tracking import SearchTracker

OBJECTIVES = ("val_accuracy", "flops")


def test_only_gated_epochs_make_reports_and_they_are_never_a_result() -> None:
    gated = {"phase": "gated", "epoch": 2, "val_accuracy": 0.7, "hard_cost_ratio": 0.3}
    report = epoch_report(gated, OBJECTIVES)
    assert report[EPOCH_KEY] == 2 and report["val_accuracy"] == 0.7
    assert math.isnan(report["flops"])  # only a hardened network has FLOPs
    assert not is_final(report, OBJECTIVES) and stopped_epoch(report) == 2
    for phase in ("pretrain", "finetune"):
        assert epoch_report({**gated, "phase": phase}, OBJECTIVES) is None
    final = {"val_accuracy": 0.8, "flops": 120.0}
    assert is_final(final, OBJECTIVES) and stopped_epoch(final) is None
    assert not is_final({}, OBJECTIVES)  # a trial that never reported


def test_a_trial_reports_each_gated_epoch_then_its_result(tmp_path: Path, restore_environ) -> None:
    raw = tiny_space(
        "reports",
        trials=1,
        concurrency=1,
        space={"gate": ["hard_concrete"], "penalty.lambda": [0.5]},
        train={"epochs": 3, "pretrain_epochs": 1, "finetune_epochs": 0, "batch_size": 32},
    )
    from ray import tune
    from ray.tune.result import SHOULD_CHECKPOINT

    class Recorder(tune.Callback):
        """Every report Tune receives, as the driver sees it."""

        def __init__(self) -> None:
            self.results: list[dict[str, Any]] = []

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **_):
            self.results.append(dict(result))

    spec = load_spec(write_space(tmp_path, raw))
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SearchTracker("reports", tracking_uri=uri, objectives=spec.objectives)
    recorder, searcher = Recorder(), StudySearch(spec)
    with ray_session(spec, None), live_callbacks([recorder, TrackingCallback(tracker)]):
        tune.Tuner(
            trainable(spec),
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=1),
            run_config=tune.RunConfig(
                name="reports",
                storage_path=str(tmp_path / "ray"),
                callbacks=[LiveCallbacks()],
                verbose=0,
            ),
        ).fit()

    *epochs, final = recorder.results
    assert [r[EPOCH_KEY] for r in epochs] == [1, 2, 3]  # gated epochs only, no warm-up
    for report in epochs:
        assert 0 <= report["val_accuracy"] <= 1 and 0 < report["hard_cost_ratio"] <= 1
        assert math.isnan(report["flops"]) and not report.get(SHOULD_CHECKPOINT)
    assert EPOCH_KEY not in final and final[SHOULD_CHECKPOINT]
    assert final["flops"] > 0
    # eval mode: the last gated epoch's accuracy and cost are the hardened network's
    assert final["val_accuracy"] == epochs[-1]["val_accuracy"]
    assert final["hard_cost_ratio"] == epochs[-1]["hard_cost_ratio"]

    client = mlflow.MlflowClient(uri)
    (run,) = [
        r
        for r in client.search_runs([tracker.experiment_id])
        if r.data.tags.get("archsearch.trial_id")
    ]
    assert run.info.status == "FINISHED" and EPOCH_KEY not in run.data.metrics
    assert run.data.metrics["flops"] == final["flops"]
    assert {"subnetwork.json", "weights.safetensors"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    (told,) = searcher.study.trials
    assert told.state == optuna.trial.TrialState.COMPLETE
    assert told.values == [final["val_accuracy"], final["flops"]]
