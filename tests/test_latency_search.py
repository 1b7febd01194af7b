"""Objectives as a choice, with measured latency: a real search (Ray, Optuna, MLflow) whose
front is the non-dominated set in as many dimensions as it has objectives, every finished
trial timed against its dense model, and the read commands following the chosen objectives.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import mlflow
import pytest
from conftest import run_cli_subprocess, tiny_space, write_space

from archsearch.hypervolume import front_hypervolume

THREE = {"val_accuracy": "max", "flops": "min", "latency": "min"}
LATENCY_KEYS = (
    "latency_ratio",
    "latency_ms",
    "dense_latency_ms",
    "latency_ratio_batched",
    "latency_ms_batched",
    "dense_latency_ms_batched",
    "latency_spread",
    "latency_seconds",
)


def _dominates(a: list[float], b: list[float], directions: list[str]) -> bool:
    """Brute force, one pair at a time: no worse everywhere, better somewhere."""
    signs = [1 if d == "max" else -1 for d in directions]
    no_worse = all(s * x >= s * y for s, x, y in zip(signs, a, b, strict=True))
    return no_worse and any(s * x > s * y for s, x, y in zip(signs, a, b, strict=True))


def _search(folder: Path, name: str, **sections) -> tuple[mlflow.MlflowClient, list, object]:
    """Run the search to its end; its client, finished child runs and parent run. The progress
    lines are kept as ``folder / "progress.txt"``."""
    write_space(folder, tiny_space(name, **sections))
    done = run_cli_subprocess(folder, "search", "space.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    (folder / "progress.txt").write_text(done.stderr)
    client = mlflow.MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    every = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in every if r.data.tags.get("archsearch.parent") == "true"]
    finished = [
        r for r in every if "archsearch.trial_id" in r.data.tags and r.info.status == "FINISHED"
    ]
    assert finished
    return client, finished, parent


def _front_by_brute_force(runs: list, objectives: dict[str, str]) -> set[str]:
    points = {r.info.run_id: [r.data.metrics[k] for k in objectives] for r in runs}
    directions = list(objectives.values())
    return {
        run_id
        for run_id, p in points.items()
        if not any(_dominates(q, p, directions) for o, q in points.items() if o != run_id)
    }


@pytest.mark.slow
def test_a_three_objective_search_times_every_trial_and_tags_the_3d_front(tmp_path: Path) -> None:
    client, finished, parent = _search(
        tmp_path,
        "three",
        # wide enough that a pruned layer is measurably faster at batch 1
        model={"name": "mlp", "options": {"hidden": [1024]}},
        data={"name": "synthetic", "options": {"n_samples": 1024}},
        objectives=list(THREE),
        latency={"runtime": "onnxruntime", "batch": 16, "repeats": 3},
        trials=5,
        sampler={"name": "tpe", "seed": 0},  # Optuna's TPE with three directions
        space={
            "gate": ["hard_concrete", "learned_threshold"],
            "granularity": ["neuron", "weight"],
            "penalty.lambda": {"loguniform": [0.02, 0.5]},
        },
    )
    for run in finished:
        metrics, tags = run.data.metrics, run.data.tags
        assert all(key in metrics for key in LATENCY_KEYS), sorted(metrics)
        assert metrics["latency"] == metrics["latency_ratio"] > 0
        assert tags["archsearch.latency"].startswith("onnxruntime ")
        assert "1 thread, batch 1 and 16" in tags["archsearch.latency"]
    assert parent.data.tags["archsearch.objectives"] == "val_accuracy:max,flops:min,latency:min"
    progress = (tmp_path / "progress.txt").read_text()
    assert re.search(r"-> val [\d.]+, FLOPs [\d.]+%, latency \d+%", progress)

    tagged = {r.info.run_id for r in finished if r.data.tags["archsearch.pareto"] == "true"}
    assert tagged == _front_by_brute_force(finished, THREE)
    curve = client.get_metric_history(parent.info.run_id, "hypervolume")
    volume = front_hypervolume([r.data.metrics for r in finished], THREE)
    assert curve[-1].value == pytest.approx(volume) and 0 < volume <= 1

    table = run_cli_subprocess(tmp_path, "pareto", "three")
    assert table.returncode == 0, table.stderr
    assert "latency %" in table.stdout.splitlines()[0]
    assert len(table.stdout.strip().splitlines()) == 1 + len(tagged)

    # choosing by measured latency: exactly the front members at or under the limit
    ratios = sorted(r.data.metrics["latency_ratio"] for r in finished if r.info.run_id in tagged)
    limit = min(1.0, ratios[len(ratios) // 2])
    flag = f"--max-latency-ratio={limit}"
    chosen = run_cli_subprocess(tmp_path, "pareto", "three", "--json", flag)
    assert chosen.returncode == 0, chosen.stderr
    rows = json.loads(chosen.stdout)
    expected = {
        r.info.run_id
        for r in finished
        if r.info.run_id in tagged and r.data.metrics["latency_ratio"] <= limit
    }
    assert {row["run_id"] for row in rows} == expected

    best = rows[0]["run_id"]
    exported = run_cli_subprocess(tmp_path, "export", best, "--format", "onnx", "-o", "m.onnx")
    assert exported.returncode == 0, exported.stderr
    assert "% of dense at batch 1" in exported.stdout  # the trial's measurement, by the FLOPs


def test_latency_as_an_objective_needs_a_runtime(tmp_path: Path) -> None:
    raw = tiny_space(objectives=["val_accuracy", "latency"], latency={"runtime": "off"})
    done = run_cli_subprocess(tmp_path, "search", str(write_space(tmp_path, raw)))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "latency.runtime: off, but latency is an objective" in done.stderr


def test_latency_off_unquoted_in_yaml_turns_timing_off(tmp_path: Path) -> None:
    """YAML 1.1 reads ``off`` as false; the file means the runtime named off."""
    from archsearch.space import load_spec

    text = (
        "name: t\nmodel: {name: mlp}\ndata: {name: digits}\nlatency: {runtime: off}\n"
        "space: {gate: [arm]}\n"
    )
    assert load_spec(write_space(tmp_path, text)).base.latency_runtime == "off"
    bad = text.replace("runtime: off", "runtime: on")
    assert "latency.runtime" in " ".join(_space_error_text(tmp_path, bad))


def _space_error_text(folder: Path, text: str) -> list[str]:
    from archsearch.space import SpaceError, load_spec

    with pytest.raises(SpaceError) as caught:
        load_spec(write_space(folder, text, name="bad.yaml"))
    return str(caught.value).splitlines()
