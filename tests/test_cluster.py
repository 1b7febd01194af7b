"""A search on a two-node Ray cluster that the test starts on 127.0.0.1, the way the README's
cluster recipe does it: `ray start --head`, `ray start --address=HEAD:PORT`, then
`archsearch search SPACE --address HEAD:PORT`. Token authentication is on for both nodes, with
a token of the test's own (RAY_AUTH_TOKEN), so nothing in ~/.ray is touched; the driver is
not told RAY_AUTH_MODE and must send the token by itself.

Both nodes run on this machine and share its IP address, so the trials report Ray's node id
too; each node gets one CPU and the search runs two trials at a time, so both must work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
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


@pytest.mark.slow
def test_search_on_a_two_node_cluster(tmp_path: Path, ray_tmp: Path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    port = free_port()
    nodes = []
    try:
        nodes.append(ray_node(tmp_path, ray_tmp, "head", env, "--head", f"--port={port}",
                              "--include-dashboard=false"))  # fmt: skip
        wait_for_log(tmp_path / "head.log", "Ray runtime started", nodes[0], timeout=120)
        nodes.append(ray_node(tmp_path, ray_tmp, "worker", env, f"--address=127.0.0.1:{port}"))
        wait_for_log(tmp_path / "worker.log", "Ray runtime started", nodes[1], timeout=120)

        write_space(tmp_path, SPACE)
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        # no RAY_AUTH_MODE for the driver: archsearch sends the token it finds, as a head does
        driver_env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        search = run_cli_subprocess(
            tmp_path, "search", "space.yaml", "--address", f"127.0.0.1:{port}",
            "--tracking-uri", uri, "--storage", str(tmp_path / "shared"), env=driver_env,
        )  # fmt: skip
        assert search.returncode == 0, search.stderr[-3000:]
    finally:
        for node in reversed(nodes):
            stop_group(node)

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("on-a-cluster")
    children = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if "archsearch.trial_id" in r.data.tags
    ]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags.get("archsearch.node_ip") for r in children)

    # which node ran each trial: the node id every trial reports (Tune keeps it in result.json)
    results = list((tmp_path / "shared" / "on-a-cluster").glob("trial_*/result.json"))
    node_ids = {json.loads(path.read_text().splitlines()[-1])["node_id"] for path in results}
    assert len(results) == 4 and len(node_ids) == 2
    trial_ids = {r.data.tags["archsearch.trial_id"] for r in children}
    assert trial_ids == {path.parent.name.removeprefix("trial_") for path in results}


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
