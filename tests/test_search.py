"""A real search, small: Ray Tune, Optuna and an MLflow SQLite store in a temporary folder.

One trial choice (lr = 1e20) makes the loss NaN at once, so the search must record a FAILED
run for it and carry on; the Pareto tags must be exactly the non-dominated finished runs.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from conftest import free_port, search_to_end, tiny_space, write_space

from archsearch.pareto import non_dominated
from archsearch.search import ClusterError, ResumeError, run_search
from archsearch.search.run import make_sampler
from archsearch.space import SAMPLERS, load_spec

FAILING_LR = 1e20

TINY = tiny_space(
    "tiny-search",
    # with this seed the random sampler draws lr = 1e20 once in four trials, both gates
    sampler={"name": "random", "seed": 2},
    space={
        "gate": ["hard_concrete", "arm"],
        "granularity": ["weight", "neuron"],
        "penalty.lambda": {"loguniform": [0.001, 1.0]},
        "lr": [0.01, FAILING_LR],
        "arm.k": {"uniform": [3.0, 10.0]},
    },
)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_a_space_file_names_is_an_optuna_sampler(name: str) -> None:
    sampler = make_sampler(name, seed=3)
    assert isinstance(sampler, optuna.samplers.BaseSampler)
    assert type(sampler).__name__ == SAMPLERS[name]


def test_four_trial_search_logs_runs_front_and_a_failure(tmp_path: Path, restore_environ) -> None:
    spec = load_spec(write_space(tmp_path, TINY))
    outcome, lines, uri = search_to_end(tmp_path, spec)

    assert not outcome.interrupted and outcome.logging_errors == []
    assert outcome.finished + outcome.failed == 4 and outcome.failed >= 1
    progress = [line for line in lines if re.match(r"\[\d/4 done", line)]
    assert len(progress) == 4 and progress[-1].startswith("[4/4 done, 0 running")
    assert any("FAILED (DegenerateTrialError" in line for line in progress), progress
    banner = next(line for line in lines if line.startswith("starting search"))
    assert "pre-flight: dense FLOPs" in banner or "pre-flight:" in banner, banner

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("tiny-search")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("archsearch.parent") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.info.run_id == outcome.parent_run_id
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4
    assert len({r.data.tags["archsearch.trial_id"] for r in children}) == 4

    for run in children:
        check_child(client, run)
    failed = [r for r in children if r.info.status == "FAILED"]
    assert {r.info.run_id for r in failed} == {
        r.info.run_id for r in children if float(r.data.params["lr"]) == FAILING_LR
    }

    finished = [r for r in children if r.info.status == "FINISHED"]
    points = [[r.data.metrics["val_accuracy"], r.data.metrics["flops"]] for r in finished]
    expected = {
        r.info.run_id
        for r, on in zip(finished, non_dominated(points, ["max", "min"]), strict=True)
        if on
    }
    tagged = {r.info.run_id for r in children if r.data.tags["archsearch.pareto"] == "true"}
    assert tagged == expected and expected
    assert {row["run_id"] for row in outcome.front} == expected

    assert "pareto.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert client.get_metric_history(parent.info.run_id, "hypervolume")


def check_child(client: mlflow.MlflowClient, run: Any) -> None:
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert {"gate", "granularity", "penalty.lambda", "lr"} <= set(params)
    # conditional: arm.k is drawn only in arm trials
    assert ("arm.k" in params) == (params["gate"] == "arm")
    assert tags["archsearch.gate"] == params["gate"]
    assert tags["archsearch.granularity"] == params["granularity"]
    assert tags["archsearch.pareto"] in ("true", "false")
    assert re.fullmatch(r"[0-9a-f]{8}", tags["archsearch.trial_id"])
    if run.info.status == "FAILED":
        assert "DegenerateTrialError" in tags["archsearch.error"]
        assert tags["archsearch.pareto"] == "false"
        return
    assert run.info.status == "FINISHED"
    for key in ("val_accuracy", "test_accuracy", "flops", "flops_ratio", "params_ratio"):
        assert key in metrics
    assert 0 < metrics["flops_ratio"] <= 1 and metrics["val_accuracy"] > 0
    assert tags["archsearch.node_ip"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"subnetwork.json", "weights.safetensors"} <= artifacts


def test_starting_again_over_a_saved_search_says_resume(tmp_path: Path) -> None:
    spec = load_spec(write_space(tmp_path, TINY))
    folder = tmp_path / "ray" / "tiny-search"
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"")  # what Tune checks for a restorable experiment
    with pytest.raises(ResumeError, match="--resume"):
        run_search(spec, storage=str(tmp_path / "ray"), tracking_uri=f"sqlite:///{tmp_path}/m.db")


def test_resume_without_a_saved_search_is_a_clear_error(tmp_path: Path) -> None:
    spec = load_spec(write_space(tmp_path, TINY))
    with pytest.raises(ResumeError, match="no search named 'tiny-search' to resume"):
        run_search(spec, storage=str(tmp_path / "ray"), resume=True)


def test_unreachable_cluster_fails_fast_with_one_line(tmp_path: Path, restore_environ) -> None:
    port = free_port()
    spec = load_spec(write_space(tmp_path, TINY))
    started = time.monotonic()
    with pytest.raises(ClusterError) as caught:
        run_search(
            spec,
            address=f"127.0.0.1:{port}",
            storage=str(tmp_path / "ray"),
            tracking_uri=f"sqlite:///{tmp_path}/m.db",
        )
    assert time.monotonic() - started < 10
    assert "\n" not in str(caught.value) and f"127.0.0.1:{port}" in str(caught.value)
    assert not (tmp_path / "m.db").exists()  # nothing half-written


def test_cli_unreachable_cluster_exits_2(tmp_path: Path, capsys, restore_environ) -> None:
    from archsearch.cli import main

    path = write_space(tmp_path, TINY)
    code = main(["search", str(path), "--address", "127.0.0.1:1", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("archsearch search: error: no Ray head answers at 127.0.0.1:1")
    assert err.count("\n") == 1
