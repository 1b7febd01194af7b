"""MLflow tracking against a real SQLite store, fed with real trial outputs.

One store and one set of trials per module: creating an MLflow database runs its migrations
(seconds), and the trials are what the search would hand over. Each test reads the store back
the way a user would (MlflowClient, ``archsearch pareto``, the UI's REST API).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.entities import ViewType

from archsearch.cli import main
from archsearch.config import TrialConfig
from archsearch.hypervolume import front_hypervolume
from archsearch.pareto import OBJECTIVES
from archsearch.subnetwork import load_subnetwork
from archsearch.tracking import (
    SearchTracker,
    TrackingError,
    front_rows,
    resolve_tracking_uri,
)
from archsearch.trial import load_data, run_trial

SMALL = {
    "model": "mlp",
    "model_options": {"hidden": [16]},
    "data": "digits",
    "epochs": 1,
    "finetune_epochs": 0,
    "batch_size": 64,
}
#: sampled params as the search hands them over: gate, granularity, lambda, gate options
SAMPLED = [
    {"gate": "arm", "granularity": "neuron", "penalty.lambda": 0.05, "arm.k": 7.0},
    {"gate": "hard_concrete", "granularity": "neuron", "penalty.lambda": 0.5},
    {"gate": "gumbel_softmax", "granularity": "neuron", "penalty.lambda": 2.0},
]


def _config(params: dict) -> TrialConfig:
    options = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(params["gate"])}
    return TrialConfig(
        **SMALL,
        gate=params["gate"],
        granularity=params["granularity"],
        penalty_lambda=params["penalty.lambda"],
        gate_options=options,
        gate_lr=0.05,
    )


@pytest.fixture(scope="module")
def trials(tmp_path_factory) -> list[tuple[dict, Path, dict]]:
    """(sampled params, checkpoint folder, reported metrics) of three real trials."""
    data = load_data(_config(SAMPLED[0]))
    out = []
    for i, params in enumerate(SAMPLED):
        folder = tmp_path_factory.mktemp(f"trial{i}")
        result = run_trial(_config(params), out_dir=folder, data=data)
        out.append((params, folder, {**result.metrics, "node_ip": "127.0.0.1"}))
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"


@pytest.fixture(scope="module")
def client(store) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(store)


ERROR_TEXT = (
    "Traceback (most recent call last):\n"
    + '  File "trial.py", line 1, in run_trial\n    raise DegenerateTrialError(...)\n' * 100
    + "archsearch.errors.DegenerateTrialError: NaN loss in epoch 2\n"
)


@pytest.fixture(scope="module")
def search(store, trials) -> dict:
    """A search of five trials: a weak one first (alone on the front until beaten), the three
    real trials, an exact copy of one of them (ties stay on the front), and a crash."""
    tracker = SearchTracker(
        "digits-mlp", tracking_uri=store, search_params={"trials": 6, "sampler": {"name": "tpe"}}
    )
    params1, dir1, metrics1 = trials[1]
    weak = {**metrics1, "val_accuracy": metrics1["val_accuracy"] - 0.05}
    runs = {"weak": tracker.log_trial("t_weak", params1, metrics=weak, trial_dir=dir1)}
    runs["weak_front_at_first"] = tracker.summary(runs["weak"])["on_front"]
    for i, (params, folder, metrics) in enumerate(trials):
        runs[f"t{i}"] = tracker.log_trial(f"t{i}", params, metrics=metrics, trial_dir=folder)
    params2, dir2, metrics2 = trials[2]
    runs["copy"] = tracker.log_trial("t_copy", params2, metrics=metrics2, trial_dir=dir2)
    runs["failed"] = tracker.log_trial("t_failed", SAMPLED[0], error=ERROR_TEXT)
    return {"tracker": tracker, "runs": runs}


def _children(client, tracker) -> list:
    return client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{tracker.parent_run_id}'",
        run_view_type=ViewType.ALL,
    )


def test_default_store_is_sqlite_in_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert resolve_tracking_uri("sqlite:///sub/x.db") == f"sqlite:///{tmp_path}/sub/x.db"
    assert resolve_tracking_uri("http://head:5000") == "http://head:5000"


def test_unreachable_server_is_one_line_naming_it() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        TrackingError, match=rf"127\.0\.0\.1:{port} is not reachable.*mlflow server"
    ):
        SearchTracker("x", tracking_uri=f"http://127.0.0.1:{port}")


def test_layout_one_experiment_one_parent_one_child_per_trial(search, client, store) -> None:
    tracker = search["tracker"]
    experiment = client.get_experiment_by_name("digits-mlp")
    assert experiment.experiment_id == tracker.experiment_id
    # artifacts beside the database, whatever the working directory was
    db_dir = Path(store.removeprefix("sqlite:///")).parent
    assert experiment.artifact_location == (db_dir / "mlruns" / "digits-mlp").as_uri()
    parent = client.get_run(tracker.parent_run_id)
    assert parent.data.tags["archsearch.parent"] == "true"
    assert parent.info.run_name.startswith("search-")
    assert parent.data.params == {"trials": "6", "sampler.name": "tpe"}
    children = _children(client, tracker)
    assert len(children) == 6
    trial_ids = {r.data.tags["archsearch.trial_id"] for r in children}
    assert trial_ids == {"t_weak", "t0", "t1", "t2", "t_copy", "t_failed"}


def test_child_run_holds_params_metrics_curves_tags_and_files(
    search, client, trials, tmp_path
) -> None:
    _, folder, metrics = trials[0]
    run = client.get_run(search["runs"]["t0"])
    assert run.info.status == "FINISHED"
    assert run.data.params == {
        "gate": "arm",
        "granularity": "neuron",
        "penalty.lambda": "0.05",
        "arm.k": "7.0",
    }
    for key in ("val_accuracy", "test_accuracy", "flops", "flops_ratio", "params_ratio"):
        assert run.data.metrics[key] == pytest.approx(metrics[key])
    subnetwork = json.loads((folder / "subnetwork.json").read_text())
    tags = run.data.tags
    assert tags["archsearch.gate"] == "arm" and tags["archsearch.granularity"] == "neuron"
    assert tags["archsearch.trial_id"] == "t0"
    assert tags["archsearch.architecture"] == subnetwork["architecture"]
    assert tags["archsearch.node_ip"] == "127.0.0.1"
    assert "archsearch.penalty_lambda" not in tags  # the weight is stored once: the param

    history = json.loads((folder / "history.json").read_text())
    curve = client.get_metric_history(run.info.run_id, "epoch/val_accuracy")
    assert [m.step for m in curve] == list(range(1, len(history) + 1))
    assert [m.value for m in curve] == pytest.approx([h["val_accuracy"] for h in history])
    assert len(client.get_metric_history(run.info.run_id, "epoch/hard_cost_ratio")) == sum(
        1 for h in history if "hard_cost_ratio" in h
    )

    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"subnetwork.json", "weights.safetensors", "history.json"} <= files
    # the logged files alone rebuild the subnetwork
    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path)))
    assert load_subnetwork(local).state_dict().keys() == load_subnetwork(folder).state_dict().keys()


def _dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """a beats b on (accuracy up, FLOPs down): no worse in both, better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def _tagged_and_brute_force_front(client, tracker) -> tuple[set, set, dict]:
    """The finished runs tagged on the front, the front by brute force over all of them, and
    each run's (accuracy, FLOPs)."""
    runs = [r for r in _children(client, tracker) if r.info.status == "FINISHED"]
    values = {
        r.info.run_id: (r.data.metrics["val_accuracy"], r.data.metrics["flops"]) for r in runs
    }
    expected = {
        run_id
        for run_id, p in values.items()
        if not any(_dominates(q, p) for other, q in values.items() if other != run_id)
    }
    tagged = {r.info.run_id for r in runs if r.data.tags["archsearch.pareto"] == "true"}
    return tagged, expected, values


def test_pareto_tags_are_exactly_the_non_dominated_finished_runs(search, client) -> None:
    tagged, expected, _ = _tagged_and_brute_force_front(client, search["tracker"])
    assert tagged == expected
    ids = search["runs"]
    assert ids["t2"] in tagged and ids["copy"] in tagged  # an exact tie keeps both
    # the weak trial was the whole front once; its tag followed when it was beaten
    assert search["runs"]["weak_front_at_first"] is True
    assert ids["weak"] not in tagged
    failed = client.get_run(ids["failed"])
    assert failed.data.tags["archsearch.pareto"] == "false"


def test_the_front_kept_trial_by_trial_equals_the_front_of_all(store, client, trials) -> None:
    """The tracker ranks each newcomer against the front only (a flat cost per trial); after
    every trial its tags must still be exactly the non-dominated set of all finished runs."""
    params, folder, metrics = trials[0]
    tracker = SearchTracker("many-trials", tracking_uri=store)
    rng = random.Random(7)
    for i in range(25):
        point = {
            **metrics,
            "val_accuracy": round(rng.uniform(0.5, 1.0), 2),  # rounding makes ties
            "flops": rng.choice([100, 200, 300, 400, 500]),
        }
        point["flops_ratio"] = point["flops"] / 1000
        tracker.log_trial(f"m{i}", params, metrics=point, trial_dir=folder)
        tagged, expected, values = _tagged_and_brute_force_front(client, tracker)
        assert tagged == expected, f"after trial {i}"
    # the yardstick over every finished trial: the dominated ones add nothing
    rows = [{"val_accuracy": v[0], "flops_ratio": v[1] / 1000} for v in values.values()]
    expected_volume = front_hypervolume(rows, OBJECTIVES)
    assert expected_volume > 0 and tracker.hypervolume() == pytest.approx(expected_volume)


def test_a_params_objective_fronts_accuracy_against_parameters(store, client, trials) -> None:
    """``objectives: [val_accuracy, params]``: the tags are the front over those two, a run
    with fewer FLOPs but more parameters is off it, and the parent records the choice."""
    params, folder, metrics = trials[0]
    objectives = {"val_accuracy": "max", "params": "min"}
    tracker = SearchTracker("by-params", tracking_uri=store, objectives=objectives)
    points = {"small": (0.80, 100, 900), "cheap": (0.80, 500, 100), "best": (0.95, 400, 800)}
    ids = {}
    for name, (accuracy, n_params, flops) in points.items():
        point = {**metrics, "val_accuracy": accuracy, "params": n_params, "flops": flops}
        ids[name] = tracker.log_trial(name, params, metrics=point, trial_dir=folder)
    runs = {r.info.run_id: r for r in _children(client, tracker)}
    tagged = {n for n, i in ids.items() if runs[i].data.tags["archsearch.pareto"] == "true"}
    assert tagged == {"small", "best"}  # "cheap" has the fewest FLOPs, not the fewest params
    parent = client.get_run(tracker.parent_run_id)
    assert parent.data.tags["archsearch.objectives"] == "val_accuracy:max,params:min"


def test_parent_run_holds_front_csv_and_hypervolume_curve(search, client, tmp_path) -> None:
    tracker = search["tracker"]
    front = {r["run_id"] for r in tracker.front()}
    folder = Path(client.download_artifacts(tracker.parent_run_id, "", str(tmp_path)))
    csv_lines = (folder / "pareto.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run_id,trial_id,gate")
    assert {line.split(",")[0] for line in csv_lines[1:]} == front
    # one drawing of the front: the dashboard the search adds at its end, no pareto.html
    assert {p.name for p in folder.iterdir()} == {"pareto.csv"}

    curve = client.get_metric_history(tracker.parent_run_id, "hypervolume")
    assert [m.step for m in curve] == [1, 2, 3, 4, 5]  # step = finished trials so far
    values = [m.value for m in curve]
    assert values == sorted(values)  # never shrinks
    finished = [r for r in _children(client, tracker) if r.info.status == "FINISHED"]
    rows = [r.data.metrics for r in finished]
    assert values[-1] == pytest.approx(front_hypervolume(rows, OBJECTIVES))


def test_a_trial_is_logged_once(search, client, trials) -> None:
    tracker = search["tracker"]
    params, folder, metrics = trials[0]
    before = len(_children(client, tracker))
    assert tracker.log_trial("t0", params, metrics=metrics, trial_dir=folder) is None
    assert len(_children(client, tracker)) == before


def test_a_crashed_trial_is_a_failed_run_with_its_error(search, client, tmp_path) -> None:
    run = client.get_run(search["runs"]["failed"])
    assert run.info.status == "FAILED"
    assert run.data.params["gate"] == "arm" and run.data.params["penalty.lambda"] == "0.05"
    # the tag is the exception line, not the first of 200 frames
    tag = run.data.tags["archsearch.error"]
    assert tag == "archsearch.errors.DegenerateTrialError: NaN loss in epoch 2"
    text = Path(client.download_artifacts(run.info.run_id, "error.txt", str(tmp_path)))
    assert text.read_text() == ERROR_TEXT  # the full text, not the truncated tag


def test_resume_reuses_the_parent_run_and_skips_logged_trials(store, client, trials) -> None:
    params, folder, metrics = trials[0]
    first = SearchTracker("resume-me", tracking_uri=store)
    first.log_trial("r0", params, metrics=metrics, trial_dir=folder)
    first.finish(status="KILLED", log_front_models=False)  # the search was interrupted

    again = SearchTracker("resume-me", tracking_uri=store, resume=True)
    assert again.parent_run_id == first.parent_run_id
    assert client.get_run(again.parent_run_id).info.status == "RUNNING"
    assert again.log_trial("r0", params, metrics=metrics, trial_dir=folder) is None
    params1, folder1, metrics1 = trials[1]
    run_id = again.log_trial("r1", params1, metrics=metrics1, trial_dir=folder1)
    assert len(_children(client, again)) == 2
    # the front spans both sessions: run r0 was loaded back, not forgotten
    assert again.summary(run_id)["finished"] == 2

    # a driver killed while logging leaves a RUNNING child run: resume replaces it
    client.create_run(
        again.experiment_id,
        tags={"mlflow.parentRunId": again.parent_run_id, "archsearch.trial_id": "r2"},
    )
    third = SearchTracker("resume-me", tracking_uri=store, resume=True)
    params2, folder2, metrics2 = trials[2]
    assert third.log_trial("r2", params2, metrics=metrics2, trial_dir=folder2) is not None
    statuses = sorted(
        r.info.status for r in _children(client, third) if r.info.lifecycle_stage == "active"
    )
    assert statuses == ["FINISHED", "FINISHED", "FINISHED"]

    fresh = SearchTracker("resume-me", tracking_uri=store)  # no resume: a new search
    assert fresh.parent_run_id != first.parent_run_id
    assert fresh.log_trial("r0", params, metrics=metrics, trial_dir=folder) is not None
    assert [r.data.tags["archsearch.trial_id"] for r in _children(client, fresh)] == ["r0"]


def test_a_fixed_penalty_weight_is_stored_once_as_a_param(store, client, trials) -> None:
    """A fixed penalty.lambda is not sampled: the run gets it from the trial's config."""
    params, folder, metrics = trials[1]
    sampled = {k: v for k, v in params.items() if k != "penalty.lambda"}
    tracker = SearchTracker("fixed-lambda", tracking_uri=store)
    run = client.get_run(tracker.log_trial("f0", sampled, metrics=metrics, trial_dir=folder))
    assert run.data.params["penalty.lambda"] == "0.5"
    assert not any("lambda" in tag for tag in run.data.tags)
    assert [r["penalty.lambda"] for r in tracker.front()] == [0.5]
    assert [r["penalty.lambda"] for r in front_rows("fixed-lambda", store)] == [0.5]


def test_finish_logs_the_front_models_loadable_by_mlflow(
    store, client, trials, monkeypatch
) -> None:
    params, folder, metrics = trials[0]
    tracker = SearchTracker("with-model", tracking_uri=store)
    run_id = tracker.log_trial("m0", params, metrics=metrics, trial_dir=folder)
    before = (os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri())
    rows = tracker.finish()
    # logging set MLflow's global URI for the call only
    assert (os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()) == before
    assert [r["run_id"] for r in rows] == [run_id]
    assert rows[0]["gate"] == "arm" and rows[0]["penalty.lambda"] == 0.05
    assert client.get_run(tracker.parent_run_id).info.status == "FINISHED"

    run = client.get_run(run_id)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)  # how a user points MLflow at the store
    model = mlflow.pytorch.load_model(run.data.tags["archsearch.model_uri"])
    x = load_data(_config(params)).test_x[:8]
    with torch.no_grad():
        assert torch.allclose(model(x), load_subnetwork(folder)(x), atol=1e-5)
    logged = client.search_logged_models([tracker.experiment_id])
    assert [m.source_run_id for m in logged] == [run_id]  # in this experiment, not Default


def test_pareto_command_prints_the_front(search, store, capsys) -> None:
    tagged = {r["run_id"] for r in front_rows("digits-mlp", store)}
    assert main(["pareto", "digits-mlp", "--json", "--tracking-uri", store]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["run_id"] for r in rows} == tagged == {r["run_id"] for r in search["tracker"].front()}
    assert [r["flops"] for r in rows] == sorted(r["flops"] for r in rows)
    assert {"gate", "granularity", "penalty.lambda", "val_accuracy", "architecture"} <= set(rows[0])

    assert main(["pareto", "digits-mlp", "--tracking-uri", store]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("run") and len(table) == len(rows) + 1

    assert main(["pareto", "no-such-space", "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert "no-such-space" in err and "digits-mlp" in err and len(err.splitlines()) == 1


def _get_json(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


@pytest.mark.slow  # the MLflow server takes 10-20 s to start on two cores
def test_ui_serves_the_store_with_the_front_filter(search, store) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "archsearch.cli", "ui", "digits-mlp", "--port", str(port)]
    ui = subprocess.Popen(
        [*command, "--tracking-uri", store],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        first = ui.stdout.readline()
        url = ui.stdout.readline().split()[-1]
        assert first.startswith("MLflow UI on sqlite:///")
        assert url == f"{base}/#/experiments/{search['tracker'].experiment_id}/runs"
        deadline = time.monotonic() + 60
        while True:
            try:
                name = "experiment_name=digits-mlp"
                got = _get_json(f"{base}/api/2.0/mlflow/experiments/get-by-name?{name}")
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "UI did not start"
                time.sleep(0.5)
        experiment_id = got["experiment"]["experiment_id"]
        found = _get_json(
            f"{base}/api/2.0/mlflow/runs/search",
            {"experiment_ids": [experiment_id], "filter": "tags.archsearch.pareto = 'true'"},
        )
        assert {r["info"]["run_id"] for r in found["runs"]} == {
            r["run_id"] for r in search["tracker"].front()
        }
        ui.send_signal(signal.SIGTERM)
        assert ui.wait(timeout=30) == 0
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
        ui.stdout.close()
    with pytest.raises(ConnectionRefusedError):  # the server went with it
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_ui_with_unknown_experiment_is_one_line(store, capsys) -> None:
    assert main(["ui", "no-such-space", "--tracking-uri", store]) == 2
    assert "no experiment named 'no-such-space'" in capsys.readouterr().err


def test_a_write_whose_answer_was_lost_is_not_logged_twice(store, client, trials) -> None:
    """The server made the trial's run, then went away before its answer arrived (a server
    killed mid-request): the search never learned the run's id. When the write is tried again,
    as the outage queue does once the server answers, the trial still has exactly one run."""
    params, folder, metrics = trials[0]
    tracker = SearchTracker("answer-lost", tracking_uri=store)
    create_run = tracker.client.create_run

    def created_then_cut_off(*args, **kwargs):
        create_run(*args, **kwargs)
        raise ConnectionError("the server went away before it answered")

    tracker.client.create_run = created_then_cut_off
    with pytest.raises(ConnectionError):
        tracker.log_trial("lost", params, metrics=metrics, trial_dir=folder)
    tracker.client.create_run = create_run
    run_id = tracker.log_trial("lost", params, metrics=metrics, trial_dir=folder)
    active = [r for r in _children(client, tracker) if r.info.lifecycle_stage == "active"]
    assert [r.info.run_id for r in active] == [run_id]
    assert active[0].info.status == "FINISHED"
