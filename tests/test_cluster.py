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
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import mlflow
import pytest
import yaml

RAY = str(Path(sys.executable).with_name("ray"))
ARCHSEARCH = [sys.executable, "-m", "archsearch.cli"]

SPACE = {
    "name": "on-a-cluster",
    "model": {"name": "mlp", "options": {"hidden": [64]}},
    # trials of a few seconds: quicker ones all finish on the first worker Ray starts
    "data": {"name": "synthetic", "options": {"n_samples": 4096}},
    "trials": 4,
    "concurrency": 2,
    "sampler": {"name": "random", "seed": 0},
    "resources": {"cpu": 1},
    "train": {"epochs": 40, "finetune_epochs": 0, "batch_size": 64, "gate_lr": 0.1},
    "space": {
        "gate": ["hard_concrete", "arm"],
        "granularity": ["neuron"],
        "penalty.lambda": {"loguniform": [0.01, 1.0]},
    },
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def wait_started(node: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Ray runtime started" in log.read_text():
            return
        assert node.poll() is None, f"ray start failed:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)
    raise AssertionError(f"ray start did not finish in {timeout}s:\n{log.read_text()[-3000:]}")


def stop(node: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        node.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        node.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):  # anything of its that outlived it
        os.killpg(node.pid, signal.SIGKILL)


@pytest.mark.slow
def test_search_on_a_two_node_cluster(tmp_path: Path, ray_tmp: Path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    port = free_port()
    nodes = []
    try:
        nodes.append(ray_node(tmp_path, ray_tmp, "head", env, "--head", f"--port={port}",
                              "--include-dashboard=false"))  # fmt: skip
        wait_started(nodes[0], tmp_path / "head.log")
        nodes.append(ray_node(tmp_path, ray_tmp, "worker", env, f"--address=127.0.0.1:{port}"))
        wait_started(nodes[1], tmp_path / "worker.log")

        (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE))
        uri = f"sqlite:///{tmp_path}/mlflow.db"
        # no RAY_AUTH_MODE for the driver: archsearch sends the token it finds, as a head does
        driver_env = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        search = subprocess.run(
            [*ARCHSEARCH, "search", "space.yaml", "--address", f"127.0.0.1:{port}",
             "--tracking-uri", uri, "--storage", str(tmp_path / "shared")],
            cwd=tmp_path, env=driver_env, capture_output=True, text=True, timeout=400,
        )  # fmt: skip
        assert search.returncode == 0, search.stderr[-3000:]
    finally:
        for node in reversed(nodes):
            stop(node)

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
