"""Run ids as users type them: ``archsearch export`` takes the 8 characters that ``archsearch
pareto`` prints, or any unique prefix of 6 or more; a shorter, unknown or ambiguous one is one
line and exit code 2, and nothing is written.

A real SQLite store: one search logged by ``SearchTracker`` (its run id drawn by MLflow), and
two more runs whose ids share their first 7 characters. MLflow draws ids at random (two sharing
a prefix is what a store of thousands of runs meets), so those two are created while
``uuid.uuid4`` hands MLflow the ids chosen here; everything the test then runs is unpatched.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from archsearch.api import export
from archsearch.cli import main
from archsearch.config import TrialConfig
from archsearch.tracking import SearchTracker
from archsearch.trial import run_trial

EXPERIMENT = "prefixes"
TWINS = ("abcdef01" + "0" * 24, "abcdef02" + "0" * 24)
CONFIG = TrialConfig(
    model="mlp",
    model_options={"hidden": [32, 16]},
    data="synthetic",
    data_options={"n_samples": 256},
    granularity="neuron",
    gate="hard_concrete",
    gate_options={"init_drop_rate": 0.9},
    penalty_lambda=1.0,
    gate_lr=0.1,
    epochs=1,
    finetune_epochs=0,
    device="cpu",
)


def _create_run_with_id(client: MlflowClient, experiment_id: str, run_id: str) -> str:
    """A run whose id is ``run_id``: MLflow's next ``uuid4()`` call (the run id) returns it."""
    real = uuid.uuid4
    handed = []

    def chosen() -> uuid.UUID:
        if handed:
            return real()
        handed.append(run_id)
        return uuid.UUID(hex=run_id)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uuid, "uuid4", chosen)
        created = client.create_run(experiment_id, run_name=f"twin-{run_id[:8]}").info.run_id
    assert created == run_id
    return created


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("prefixes")
    trial = root / "trial"
    run_trial(CONFIG, out_dir=trial)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = SearchTracker(EXPERIMENT, tracking_uri=uri)
    params = {"gate": "hard_concrete", "granularity": "neuron", "penalty.lambda": 1.0}
    logged = tracker.log_trial("t0", params, trial_dir=trial)
    tracker.finish(log_front_models=False)
    client = MlflowClient(uri)
    for run_id in TWINS:
        _create_run_with_id(client, tracker.experiment_id, run_id)
        for name in ("subnetwork.json", "weights.safetensors"):
            client.log_artifact(run_id, str(trial / name))
        client.set_terminated(run_id)
    flops = json.loads((trial / "subnetwork.json").read_text())["flops"]["total"]
    return {"uri": uri, "logged": logged, "flops": flops}


def _export(store: dict, source: str, output: Path) -> list[str]:
    return ["export", source, "--format", "onnx", "-o", str(output), "--tracking-uri", store["uri"]]


def _one_line_error(argv: list[str], capsys) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_the_ids_pareto_prints_work_with_export(store, tmp_path, capsys) -> None:
    assert main(["pareto", EXPERIMENT, "--tracking-uri", store["uri"]]) == 0
    printed = capsys.readouterr().out.splitlines()[1].split()[0]
    assert len(printed) == 8 and store["logged"].startswith(printed)
    output = tmp_path / "m.onnx"
    assert main(_export(store, printed, output)) == 0
    assert f"FLOPs          {store['flops']:,}" in capsys.readouterr().out
    assert output.is_file()


def test_six_characters_are_enough_when_unique(store, tmp_path, capsys) -> None:
    output = tmp_path / "m.onnx"
    assert main(_export(store, store["logged"][:6].upper(), output)) == 0
    assert output.is_file()
    output = tmp_path / "twin.onnx"
    assert main(_export(store, "abcdef01", output)) == 0  # one of two sharing "abcdef0"
    assert output.is_file()


def test_the_python_api_takes_a_prefix_too(store, tmp_path) -> None:
    report = export(store["logged"][:8], "torchscript", tmp_path / "m.pt", store["uri"])
    assert report.flops == store["flops"]


def test_an_ambiguous_prefix_lists_the_candidates(store, tmp_path, capsys) -> None:
    output = tmp_path / "m.onnx"
    err = _one_line_error(_export(store, "abcdef0", output), capsys)
    assert "'abcdef0' is ambiguous" in err
    assert all(run_id in err for run_id in TWINS)
    assert "give more characters" in err
    assert not output.exists()


def test_a_prefix_shorter_than_six_is_refused(store, tmp_path, capsys) -> None:
    output = tmp_path / "m.onnx"
    err = _one_line_error(_export(store, store["logged"][:5], output), capsys)
    assert "too short" in err and "at least 6 characters" in err
    assert not output.exists()


def test_an_unknown_prefix_is_one_line(store, tmp_path, capsys) -> None:
    output = tmp_path / "m.onnx"
    unknown = "fedcba9876"
    assert not store["logged"].startswith(unknown)
    err = _one_line_error(_export(store, unknown, output), capsys)
    assert f"'{unknown}' is neither a directory nor the start of a run id" in err
    assert store["uri"] in err
    assert not output.exists()
