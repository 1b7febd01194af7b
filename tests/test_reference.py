"""The dense reference of a search (issue 15, part 2): the dense network trained once with
the trials' schedule, logged on the parent run (never as a trial, never on the front, kept
across a killed driver and ``--resume``), shown by ``pareto``, the dashboard and ``export``;
and ``init: {from: reference}``, which starts every trial from its weights.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import (
    TRIAL_SPACE,
    kill_group,
    run_cli_subprocess,
    space_error,
    start_cli,
    tiny_space,
    trial_spec,
    wait_for_log,
    write_space,
)
from safetensors.torch import load_file, save_file

from archsearch.commands.export import format_accuracy
from archsearch.config import TrialConfig
from archsearch.pareto import DROP_KEY, format_front_table, format_reference, with_accuracy_drop
from archsearch.space import load_spec
from archsearch.trial import build_model, dense_reference, load_data, measure_reference

# -- the dense network, trained or loaded -----------------------------------------------------

#: the reference on (the tests' tiny spaces turn it off, to save a Ray task per search)
ON = {"reference": {"train": True}}


def test_the_reference_is_the_trials_dense_network_trained_without_gates(tmp_path: Path) -> None:
    raw = {**TRIAL_SPACE, "train": {**TRIAL_SPACE["train"], "epochs": 2, "finetune_epochs": 1}}
    config = trial_spec(tmp_path, raw).base
    data = load_data(config)
    untrained = measure_reference(config, data)
    trained = dense_reference(config, data)
    assert set(trained.metrics) == {
        "val_accuracy",
        "test_accuracy",
        "flops",
        "params",
        "train_seconds",
    }
    assert trained.metrics["val_accuracy"] > untrained["val_accuracy"] + 0.3
    assert trained.metrics["flops"] == untrained["flops"]
    # its weights are what a trial starting from them loads
    path = tmp_path / "reference.safetensors"
    save_file(trained.weights, str(path))
    loaded = dataclasses.replace(config, init_weights=str(path))
    model = build_model(loaded, data.input_shape, data.num_classes)
    assert _same(model.state_dict(), trained.weights)
    assert measure_reference(loaded, data)["val_accuracy"] == trained.metrics["val_accuracy"]
    # loaded weights are measured, not trained again, and not stored a second time
    measured = dense_reference(loaded, data)
    assert measured.weights == {} and "train_seconds" not in measured.metrics
    assert measured.metrics["test_accuracy"] == trained.metrics["test_accuracy"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# -- the space file ---------------------------------------------------------------------------


def test_reference_and_init_from_in_the_space_file(tmp_path: Path) -> None:
    without = {key: value for key, value in tiny_space().items() if key != "reference"}
    default = load_spec(write_space(tmp_path, without))
    # trials start from the trained reference unless told otherwise (RESULTS.md: 1-2 points)
    assert default.reference_train and default.init_from == "reference"
    assert "reference.train" not in default.describe()
    assert default.describe()["init.from"] == "reference"
    off = load_spec(write_space(tmp_path, tiny_space(reference={"train": False})))
    assert not off.reference_train and off.describe()["reference.train"] is False
    assert off.init_from == "scratch" and "init.from" not in off.describe()
    scratch = load_spec(write_space(tmp_path, tiny_space(init={"from": "scratch"}, **ON)))
    assert scratch.reference_train and scratch.init_from == "scratch"
    start = load_spec(write_space(tmp_path, tiny_space(init={"from": "reference"}, **ON)))
    assert start.init_from == "reference" and start.describe()["init.from"] == "reference"


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"init": {"from": "dense"}}, "init.from: expected scratch or reference, got 'dense'"),
        ({"reference": {"train": "no"}}, "reference.train: expected true or false"),
        ({"reference": {"epochs": 3}}, "reference.epochs: unknown key"),
        (
            {"init": {"from": "reference"}, "reference": {"train": False}},
            "init.from: reference needs the dense reference trained",
        ),
    ],
)
def test_bad_reference_settings_are_one_line(tmp_path: Path, sections, expected) -> None:
    assert expected in space_error(tmp_path, tiny_space(**sections))


def test_init_from_reference_and_init_weights_exclude_each_other(tmp_path: Path) -> None:
    weights = tmp_path / "dense.safetensors"
    weights.write_bytes(b"")
    sections = {"init": {"from": "reference", "weights": str(weights)}, **ON}
    assert "init.from: reference, but init.weights is given" in space_error(
        tmp_path, tiny_space(**sections)
    )


def test_unset_init_from_gives_way_to_the_users_weights(tmp_path: Path) -> None:
    """With ``init.weights`` the trials start from the user's network, the reference then."""
    plain = load_spec(write_space(tmp_path, tiny_space(**ON)))
    data = load_data(plain.base)
    weights = tmp_path / "dense.safetensors"
    model = build_model(plain.base, data.input_shape, data.num_classes)
    save_file(model.state_dict(), str(weights))
    loaded = load_spec(write_space(tmp_path, tiny_space(init={"weights": str(weights)}, **ON)))
    assert loaded.init_from == "scratch" and loaded.base.init_weights == str(weights)


def test_a_search_told_not_to_train_one_has_no_reference(tmp_path: Path) -> None:
    from archsearch.search.budget import TimeBudget
    from archsearch.search.reference import start_reference
    from archsearch.tracking import SearchTracker

    spec = load_spec(write_space(tmp_path, tiny_space(reference={"train": False})))
    tracker = SearchTracker("tiny", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    lines: list[str] = []
    assert start_reference(spec, tracker, tmp_path / "ray", TimeBudget(None), lines.append) is spec
    tracker.finish(log_front_models=False)
    assert lines == [] and tracker.reference() is None


# -- what the commands print --------------------------------------------------------------


REFERENCE = {"source": "trained", "val_accuracy": 0.9, "test_accuracy": 0.89, "flops": 1000.0}


def test_the_table_shows_each_trials_test_accuracy_below_the_reference() -> None:
    rows = [
        {"run_id": "a" * 32, "val_accuracy": 0.88, "test_accuracy": 0.8738, "flops": 10},
        {"run_id": "b" * 32, "val_accuracy": 0.91, "test_accuracy": 0.8950, "flops": 500},
        {"run_id": "c" * 32, "val_accuracy": 0.5, "test_accuracy": None, "flops": 5},
    ]
    assert with_accuracy_drop(rows, None) == rows
    dropped = with_accuracy_drop(rows, REFERENCE)
    assert [row[DROP_KEY] for row in dropped] == [pytest.approx(1.62), pytest.approx(-0.5), None]
    lines = format_front_table(dropped).splitlines()
    assert "test drop" in lines[0] and "test drop" not in format_front_table(rows)
    assert "+1.62 pt" in lines[2] and "-0.50 pt" in lines[3] and lines[1].split()[6] == "-"
    assert format_reference({**REFERENCE, "params": 2000.0, "train_seconds": 41.6}) == (
        "dense reference (trained here in 42 s): val 0.9000, test 0.8900, FLOPs 1,000, params 2,000"
    )


def test_export_prints_the_trials_accuracy_beside_the_reference() -> None:
    metrics = {"val_accuracy": 0.88, "test_accuracy": 0.8738}
    assert format_accuracy(metrics, REFERENCE) == (
        "test 0.8738, val 0.8800 (measured in the trial): 1.62 points below the test 0.8900 "
        "of the dense reference (trained here)"
    )
    assert format_accuracy(metrics, None) == "test 0.8738, val 0.8800 (measured in the trial)"
    assert format_accuracy({}, REFERENCE) is None


# -- in a search: real Ray, real MLflow ------------------------------------------------------


def _store(folder: Path, name: str) -> tuple[mlflow.MlflowClient, object, list, list]:
    client = mlflow.MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name(name)
    every = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in every if r.data.tags.get("archsearch.parent") == "true"]
    children = [r for r in every if r.info.run_id != parent.info.run_id]
    trials = [r for r in children if "archsearch.trial_id" in r.data.tags]
    return client, parent, children, trials


def test_a_search_trains_its_reference_once_beside_the_trials_and_shows_it(
    tmp_path: Path,
) -> None:
    raw = tiny_space("with-ref", trials=3, init={"from": "scratch"}, **ON)
    write_space(tmp_path, raw)
    done = run_cli_subprocess(tmp_path, "search", "space.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("training the dense reference (2 + 0 epochs") == 1
    # beside the trials it holds one trial's slot, as a trial would
    assert "no gates; 1 CPU / 0 GPU as a Ray task, beside the trials" in done.stderr

    client, parent, children, trials = _store(tmp_path, "with-ref")
    # on the parent run, once; no child run of its own, so never a trial nor on the front
    assert parent.data.tags["archsearch.reference"] == "trained"
    history = client.get_metric_history(parent.info.run_id, "reference.test_accuracy")
    assert len(history) == 1 and history[0].value > 0.25
    assert len(children) == len(trials) == 3
    assert all(not k.startswith("reference.") for r in trials for k in r.data.metrics)
    front = [r for r in trials if r.data.tags["archsearch.pareto"] == "true"]
    assert front and parent.data.tags.get("archsearch.pareto") is None
    reference_line = next(x for x in done.stderr.splitlines() if x.startswith("dense reference ("))
    assert "trained here" in reference_line and "FLOPs 1,088, params 1,108" in reference_line
    weights = Path(client.download_artifacts(parent.info.run_id, "reference", str(tmp_path)))
    stored = tmp_path / "ray_results" / "with-ref" / "reference" / "weights.safetensors"
    assert _same(load_file(str(weights / "weights.safetensors")), load_file(str(stored)))

    table = run_cli_subprocess(tmp_path, "pareto", "with-ref")
    assert table.returncode == 0, table.stderr
    assert "test drop" in table.stdout.splitlines()[0]
    assert table.stdout.rstrip().splitlines()[-1] == reference_line
    rows = json.loads(run_cli_subprocess(tmp_path, "pareto", "with-ref", "--json").stdout)
    dense = history[0].value
    for row in rows:
        assert row[DROP_KEY] == pytest.approx(100 * (dense - row["test_accuracy"]))

    page = run_cli_subprocess(tmp_path, "dashboard", "with-ref", "-o", "page.html")
    assert page.returncode == 0, page.stderr
    assert '"reference":{"source":"trained"' in (tmp_path / "page.html").read_text()

    exported = run_cli_subprocess(
        tmp_path, "export", rows[0]["run_id"][:8], "--format", "onnx", "-o", "m.onnx"
    )
    assert exported.returncode == 0, exported.stderr
    (accuracy,) = [line for line in exported.stdout.splitlines() if line.startswith("accuracy")]
    assert "of the dense reference (trained here)" in accuracy
    assert f"the test {dense:.4f}" in accuracy


def test_trials_from_the_reference_start_from_its_weights(tmp_path: Path) -> None:
    raw = tiny_space("from-ref", trials=2, init={"from": "reference"}, **ON)
    write_space(tmp_path, raw)
    done = run_cli_subprocess(tmp_path, "search", "space.yaml")
    assert done.returncode == 0, done.stderr[-3000:]
    err = done.stderr
    # the trials wait for it, so it trains on both of their slots' CPUs, not one
    assert "2 CPU / 0 GPU in this process, before the first trial (init.from: reference)" in err
    assert err.index("dense reference (trained here") < err.index("[1/2 done")

    client, parent, _, trials = _store(tmp_path, "from-ref")
    assert len(trials) == 2
    reference = load_file(
        client.download_artifacts(parent.info.run_id, REFERENCE_ARTIFACT, str(tmp_path))
    )
    spec = load_spec(tmp_path / "space.yaml")
    data = load_data(spec.base)
    for run in trials:
        # the settings the trial ran with, as it wrote them: its dense network before gating
        folder = Path(client.download_artifacts(run.info.run_id, "subnetwork.json", str(tmp_path)))
        ran = json.loads(folder.read_text())["trial_config"]
        config = TrialConfig.from_dict(ran)
        assert ran["init_weights"].endswith("from-ref/reference/weights.safetensors")
        start = build_model(config, data.input_shape, data.num_classes)
        assert _same(start.state_dict(), reference)


REFERENCE_ARTIFACT = "reference/weights.safetensors"


def test_a_time_budget_spent_on_the_reference_is_one_line_and_starts_no_trial(
    tmp_path: Path,
) -> None:
    # trained in the driver's own process on a local Ray: the budget is looked at after each
    # epoch, so a reference far longer than the budget ends the search within an epoch or so
    raw = tiny_space(
        "late-ref",
        trials=2,
        init={"from": "reference"},
        data={"name": "synthetic", "options": {"n_samples": 4096}},
        train={"epochs": 400, "finetune_epochs": 0, "batch_size": 64},
        **ON,
    )
    write_space(tmp_path, raw)
    done = run_cli_subprocess(tmp_path, "search", "space.yaml", "--time-budget", "1s")
    assert done.returncode == 2, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "the time budget ran out while the dense reference trained" in last
    assert "[1/2 done" not in done.stderr
    _, parent, children, _ = _store(tmp_path, "late-ref")
    assert children == [] and parent.info.status == "FAILED"
    assert "archsearch.reference" not in parent.data.tags


@pytest.mark.slow
def test_the_reference_survives_a_killed_driver_and_is_not_trained_again(tmp_path: Path) -> None:
    trials = 6
    raw = tiny_space(
        "killed-ref",
        model={"name": "mlp", "options": {"hidden": [64]}},
        data={"name": "synthetic", "options": {"n_samples": 4096}},
        trials=trials,
        train={"epochs": 30, "finetune_epochs": 0, "batch_size": 64, "gate_lr": 0.1},
        **ON,
    )
    write_space(tmp_path, raw)
    first, log = start_cli(tmp_path, "search", "space.yaml")
    try:
        wait_for_log(log, r"^dense reference \(trained here", first, timeout=300)
        wait_for_log(log, rf"^\[1/{trials} done", first, timeout=300)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        kill_group(first)
    _, parent, _, logged = _store(tmp_path, "killed-ref")
    assert 1 <= len(logged) < trials, "the kill must land after one trial and before the end"
    assert parent.data.tags["archsearch.reference"] == "trained"

    second, log = start_cli(tmp_path, "search", "space.yaml", "--resume")
    try:
        assert second.wait(timeout=400) == 0, log.read_text()[-3000:]
    finally:
        kill_group(second)
    text = log.read_text()
    assert "training the dense reference" not in text
    assert "kept from this search's first run" in text
    client, parent_after, children, trial_runs = _store(tmp_path, "killed-ref")
    assert parent_after.info.run_id == parent.info.run_id
    for key in ("val_accuracy", "test_accuracy", "flops", "params"):
        assert len(client.get_metric_history(parent.info.run_id, f"reference.{key}")) == 1
    assert len(children) == len(trial_runs) == trials


def test_the_python_api_sets_the_reference_and_init_from() -> None:
    from archsearch import api

    common = {"model": "mlp", "data": "synthetic", "space": {"gate": ["hard_concrete"]}}
    start = api.search_spec("api-ref", init_from="reference", **common)
    assert start.init_from == "reference" and start.reference_train
    off = api.search_spec("api-off", reference={"train": False}, **common)
    assert not off.reference_train and off.init_from == "scratch"
    default = api.search_spec("api-default", **common)
    assert default.reference_train and default.init_from == "reference"
