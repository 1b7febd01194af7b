"""A search on a two-node Ray cluster that the test starts on 127.0.0.1, the way the README's
cluster recipe does it: `ray start --head`, `ray start --address=HEAD:PORT`, then
`archsearch search SPACE --address HEAD:PORT`. Token authentication is on for both nodes, with
a token of the test's own (RAY_AUTH_TOKEN), so nothing in ~/.ray is touched; the driver is
not told RAY_AUTH_MODE and must send the token by itself.

Both nodes run on this machine and share its IP address, so the trials report Ray's node id
too; each node gets one CPU and the search runs two trials at a time, so both must work.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from conftest import (
    free_port,
    run_cli_subprocess,
    stop_group,
    tiny_space,
    wait_for_log,
    write_space,
)
from test_user_search import write_user_project

from archsearch.search.auth import token_auth_if_available

RAY = str(Path(sys.executable).with_name("ray"))

SPACE = tiny_space(
    "on-a-cluster",
    model={"name": "mlp", "options": {"hidden": [64]}},
    # trials of a few seconds: quicker ones all finish on the first worker Ray starts
    data={"name": "synthetic", "options": {"n_samples": 4096}},
    train={"epochs": 40, "finetune_epochs": 0, "batch_size": 64, "gate_lr": 0.1},
)


@pytest.fixture
def ray_tmp():
    """Ray's socket paths must fit in 107 bytes: pytest's tmp_path is too deep for them."""
    folder = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def ray_node(
    folder: Path, temp: Path, name: str, env: dict[str, str], *args: str
) -> subprocess.Popen:
    """`ray start --block`: the node lives as long as this process, and SIGTERM to it stops
    exactly the Ray processes it started (unlike `ray stop`, which stops every Ray process of
    the user on the machine, other people's included)."""
    log = (folder / f"{name}.log").open("w")
    command = [
        RAY, "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1",
        f"--temp-dir={temp / name}", "--disable-usage-stats", *args,
    ]  # fmt: skip
    return subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


@contextlib.contextmanager
def two_node_cluster(folder: Path, ray_tmp: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A head and a worker node on 127.0.0.1 with token authentication; yields the head's
    address and the driver's environment (the token, not RAY_AUTH_MODE)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    port = free_port()
    nodes = []
    try:
        nodes.append(ray_node(folder, ray_tmp, "head", env, "--head", f"--port={port}",
                              "--include-dashboard=false"))  # fmt: skip
        wait_for_log(folder / "head.log", "Ray runtime started", nodes[0], timeout=120)
        nodes.append(ray_node(folder, ray_tmp, "worker", env, f"--address=127.0.0.1:{port}"))
        wait_for_log(folder / "worker.log", "Ray runtime started", nodes[1], timeout=120)
        # no RAY_AUTH_MODE for the driver: archsearch sends the token it finds, as a head does
        yield f"127.0.0.1:{port}", {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
    finally:
        for node in reversed(nodes):
            stop_group(node)


def node_ids_of_trials(storage: Path) -> dict[str, str]:
    """Trial id -> the node id each trial reported (Tune keeps it in result.json)."""
    return {
        path.parent.name.removeprefix("trial_"): json.loads(path.read_text().splitlines()[-1])[
            "node_id"
        ]
        for path in storage.glob("trial_*/result.json")
    }


@pytest.mark.slow
def test_search_on_a_two_node_cluster(tmp_path: Path, ray_tmp: Path) -> None:
    write_space(tmp_path, SPACE)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with two_node_cluster(tmp_path, ray_tmp) as (address, driver_env):
        search = run_cli_subprocess(
            tmp_path, "search", "space.yaml", "--address", address,
            "--tracking-uri", uri, "--storage", str(tmp_path / "shared"), env=driver_env,
        )  # fmt: skip
        assert search.returncode == 0, search.stderr[-3000:]

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("on-a-cluster")
    children = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if "archsearch.trial_id" in r.data.tags
    ]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags.get("archsearch.node_ip") for r in children)

    # which node ran each trial: the node id every trial reports
    node_ids = node_ids_of_trials(tmp_path / "shared" / "on-a-cluster")
    assert len(node_ids) == 4 and len(set(node_ids.values())) == 2
    assert {r.data.tags["archsearch.trial_id"] for r in children} == set(node_ids)


@pytest.mark.slow
def test_a_user_model_runs_on_the_second_node(tmp_path: Path, ray_tmp: Path) -> None:
    """usernet.py lives only in the driver's folder: Ray's runtime environment carries it."""
    project = write_user_project(tmp_path)
    space = project.space("user-on-a-cluster")
    # Tune hands a pending trial to an actor that has finished its first: trials long enough
    # that the worker node's actor is up before the head's first trial ends
    space["train"] = {**space["train"], "epochs": 20}  # ~15 s; the worker node came up 6 s later
    write_space(tmp_path, space)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with two_node_cluster(tmp_path, ray_tmp) as (address, driver_env):
        search = run_cli_subprocess(
            tmp_path, "search", "space.yaml", "--address", address,
            "--tracking-uri", uri, "--storage", str(tmp_path / "shared"), env=driver_env,
        )  # fmt: skip
        assert search.returncode == 0, search.stderr[-3000:]
    assert f"data root {project.images}" in search.stderr  # the progress lines
    node_ids = node_ids_of_trials(tmp_path / "shared" / "user-on-a-cluster")
    assert len(node_ids) == 2 and len(set(node_ids.values())) == 2  # one on the worker node
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("user-on-a-cluster")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if "archsearch.trial_id" in r.data.tags]
    assert len(children) == 2 and all(r.info.status == "FINISHED" for r in children)
    parent = next(r for r in runs if "archsearch.trial_id" not in r.data.tags)
    assert parent.data.tags.get("archsearch.reference") == "loaded"


@pytest.mark.parametrize(
    ("environ", "token_file", "mode"),
    [
        ({"RAY_AUTH_TOKEN": "abc"}, False, "token"),
        ({}, True, "token"),  # ~/.ray/auth_token, as `ray start --head` leaves it
        ({"RAY_AUTH_TOKEN_PATH": "{home}/token"}, False, "token"),
        ({}, False, None),  # no token: Ray's own default
        ({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "abc"}, False, "disabled"),
    ],
)
def test_driver_turns_token_auth_on_when_it_holds_a_token(
    tmp_path: Path, monkeypatch, environ: dict[str, str], token_file: bool, mode: str | None
) -> None:
    """What lets the driver above join without being told RAY_AUTH_MODE."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "token").write_text("abc")
    if token_file:
        (tmp_path / ".ray").mkdir()
        (tmp_path / ".ray" / "auth_token").write_text("abc")
    for name, value in environ.items():
        monkeypatch.setenv(name, value.format(home=tmp_path))
    token_auth_if_available()
    assert os.environ.get("RAY_AUTH_MODE") == mode
