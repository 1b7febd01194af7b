"""Faults a search meets on a cluster, made to happen for real.

A node lost mid-trial: on the two-node loopback cluster of test_cluster.py, every process of
the worker node (its `ray start`, raylet and the trial's worker) is SIGKILLed while a trial
runs there, as when a machine vanishes. That trial must run again from its start on the node
that is left, be logged once, and the search must end with every requested trial in MLflow.

A trial's own exception (lr = 1e20: NaN loss at once) must not be retried, whatever
``retries`` allows: it is the trial's result, a FAILED run with its error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path

import mlflow
import pytest
from conftest import search_to_end, start_cli, tiny_space, write_space
from test_cluster import ray_tmp, two_node_cluster  # noqa: F401 (ray_tmp: a fixture)

from archsearch.space import SpaceError, load_spec

#: trials of several seconds, so the worker node is killed while one runs there
CLUSTER_SPACE = tiny_space(
    "node-lost",
    model={"name": "mlp", "options": {"hidden": [64]}},
    data={"name": "synthetic", "options": {"n_samples": 4096}},
    train={"epochs": 60, "finetune_epochs": 0, "batch_size": 64, "gate_lr": 0.1},
    trials=3,
    retries=2,
)

RETRY_LINE = re.compile(r"trial (\w+) was cut off \((.*)\); running it again from the start, "
                        r"retry 1 of 2")  # fmt: skip


def children_of(uri: str, name: str) -> list:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if "archsearch.trial_id" in r.data.tags]


def test_retries_is_a_space_file_key(tmp_path: Path) -> None:
    assert load_spec(write_space(tmp_path, tiny_space("r"))).retries == 2
    assert load_spec(write_space(tmp_path, tiny_space("r", retries=0))).retries == 0
    for value, expected in ((-1, "expected an integer >= 0"), ("two", "expected an integer")):
        with pytest.raises(SpaceError, match=f"retries: {expected}"):
            load_spec(write_space(tmp_path, tiny_space("r", retries=value)))


def test_a_trials_own_error_is_not_retried(tmp_path: Path, restore_environ) -> None:
    space = tiny_space("own-error", trials=2, retries=2)
    space["space"]["lr"] = [1e20]
    outcome, lines, uri = search_to_end(tmp_path, load_spec(write_space(tmp_path, space)))
    assert (outcome.finished, outcome.failed, outcome.retried) == (0, 2, 0), lines
    assert not any("running it again" in line for line in lines), lines
    assert sum("FAILED (DegenerateTrialError" in line for line in lines) == 2, lines
    children = children_of(uri, "own-error")
    assert len(children) == 2 and all(r.info.status == "FAILED" for r in children)
    assert all("DegenerateTrialError" in r.data.tags["archsearch.error"] for r in children)
    # Tune's error file of each trial holds one failure: it ran once
    for error_file in (tmp_path / "ray" / "own-error").glob("trial_*/error.txt"):
        assert error_file.read_text().count("Failure # ") == 1, error_file.read_text()


def node_group(temp: Path) -> int:
    """The process group of the node started with ``--temp-dir=temp``: its `ray start`
    leads the group, and the raylet and the trials' workers are in it."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "start" in words and f"--temp-dir={temp}" in words:
            return os.getpgid(int(cmdline.parent.name))
    raise AssertionError(f"no `ray start --temp-dir={temp}` process")


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, title) of every process on the machine."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
            title = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        found[int(stat.parent.name)] = (int(fields[1]), int(fields[2]), title)
    return found


def node_workers(group: int) -> tuple[set[int], bool]:
    """The worker processes of a node (Ray starts each in a session of its own, as children
    of the node's raylet, which is in the group) and whether one of them runs a trial."""
    table = processes()
    node = {pid for pid, (_, pgid, _) in table.items() if pgid == group}
    workers = {pid for pid, (ppid, _, _) in table.items() if ppid in node and pid not in node}
    busy = any(table[pid][2].startswith("ray::ImplicitFunc.train") for pid in workers)
    return workers, busy


def lose_node(group: int, workers: set[int]) -> None:
    """SIGKILL every process of the node at once, as when its machine vanishes."""
    os.killpg(group, signal.SIGKILL)
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_node_lost_mid_trial_runs_its_trial_again(tmp_path: Path, ray_tmp: Path) -> None:  # noqa: F811
    write_space(tmp_path, CLUSTER_SPACE)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "shared"
    with two_node_cluster(tmp_path, ray_tmp) as (address, driver_env):
        group = node_group(ray_tmp / "worker")
        search, log = start_cli(
            tmp_path, "search", "space.yaml", "--address", address,
            "--tracking-uri", uri, "--storage", str(storage), env=driver_env,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        workers, busy = node_workers(group)
        while not busy:
            assert search.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
            workers, busy = node_workers(group)
        lose_node(group, workers)  # mid-trial: the worker node is gone
        killed_at = time.monotonic()
        search.wait(timeout=240)
    stderr = log.read_text()
    assert search.returncode == 0, stderr[-3000:]
    retried = RETRY_LINE.search(stderr)
    assert retried, stderr[-3000:]
    print(f"search ended {time.monotonic() - killed_at:.0f} s after the kill; {retried.group(0)}")
    assert "actor" in retried.group(2).lower(), retried.group(0)  # Ray's word for it

    children = children_of(uri, "node-lost")
    trial_ids = [r.data.tags["archsearch.trial_id"] for r in children]
    assert len(children) == 3 and len(set(trial_ids)) == 3, trial_ids  # each logged once
    assert all(r.info.status == "FINISHED" for r in children)
    assert retried.group(1) in trial_ids
    # the retried trial ran again to its end, on the node that is left
    result = storage / "node-lost" / f"trial_{retried.group(1)}" / "result.json"
    final = json.loads(result.read_text().splitlines()[-1])
    assert final["val_accuracy"] > 0 and final["node_id"]


def test_a_worker_ray_lost_is_an_actor_failure_for_tune() -> None:
    """The failures that mean a trial's worker process is gone reach Tune's actor manager as
    the actor failure it handles (retry, then a FAILED trial), Ray's message kept; a trial's
    own exception and a dead actor pass unchanged."""
    from ray.exceptions import (
        NodeDiedError,
        OutOfMemoryError,
        RayActorError,
        RayTaskError,
        WorkerCrashedError,
    )

    from archsearch.search.lost_workers import as_actor_failure

    for lost in (
        OutOfMemoryError("1 worker(s) were killed"),
        WorkerCrashedError(),
        NodeDiedError("x"),
    ):
        failure = as_actor_failure(lost)
        assert isinstance(failure, RayActorError) and str(failure) == str(lost)
    own = RayTaskError("archsearch_trial", "Traceback ...", ValueError("nan"))
    dead = RayActorError(error_msg="the actor died")
    assert as_actor_failure(own) is own and as_actor_failure(dead) is dead
    # and the Ray installed still has the handler this hands them to (else a Ray upgrade
    # silently brings back a search ended by one lost worker)
    from ray.tune.execution import tune_controller

    from archsearch.search.lost_workers import tolerate_lost_workers

    tolerate_lost_workers()
    handler = tune_controller.RayActorManager._actor_task_failed
    assert getattr(handler, "tolerates_lost_workers", False)


def _used_memory() -> tuple[float, float]:
    """This machine's memory in use, as a share of the total, and the total in GiB (what
    Ray's memory monitor compares with its threshold)."""
    info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total, available = (int(info[key].split()[0]) for key in ("MemTotal", "MemAvailable"))
    return (total - available) / total, total / 2**20


@pytest.mark.slow
def test_a_trial_killed_for_memory_is_a_failed_trial_and_one_line(
    tmp_path: Path, restore_environ
) -> None:
    """Ray's memory monitor kills a trial's worker when the machine runs low on memory. The
    trial ends FAILED with Ray's first sentence as its reason (one line, not Ray's pages of
    statistics), and the search goes on to its end: such a kill once ended a whole search.
    The monitor's threshold is set 1.5 GiB above what is in use now, and the trial's data
    (4 million synthetic examples) takes more than that."""
    used, total = _used_memory()
    os.environ["RAY_memory_usage_threshold"] = f"{used + 1.5 / total:.4f}"  # noqa: SIM112 (Ray's name)
    data = {"name": "synthetic", "options": {"n_samples": 4_000_000}}
    space = tiny_space("killed-for-memory", trials=1, concurrency=1, retries=0, data=data)
    outcome, lines, uri = search_to_end(tmp_path, load_spec(write_space(tmp_path, space)))
    assert (outcome.finished, outcome.failed) == (0, 1), lines
    reason = "1 worker(s) were killed due to the node running low on memory"
    (failed,) = [line for line in lines if "-> FAILED (" in line]
    assert f"FAILED ({reason}" in failed and "\n" not in failed, failed
    (child,) = children_of(uri, "killed-for-memory")
    assert child.info.status == "FAILED"
    assert child.data.tags["archsearch.error"].startswith(reason)


def test_a_trials_error_line_is_the_newest_failure_in_one_line() -> None:
    """Tune's error file of a retried trial holds each failure under its own header; the
    line a user reads (progress line, the run's error tag) is the newest one's exception, or
    the first sentence of a report that has no traceback."""
    from archsearch.errors import error_summary, short_error

    traceback = (
        'Traceback (most recent call last):\n  File "x.py", line 1\n'
        "ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task."
    )
    memory = "1 worker(s) were killed due to the node running low on memory. Memory on...\n" + (
        "OOM kill reason: Memory usage 6187921408B exceeded threshold\n- objects spillable: 0"
    )
    text = f"Failure # 1 (occurred at 2026-12-05_05-28-28)\n{traceback}\n"
    assert (
        short_error(text)
        == "ActorDiedError: The actor died unexpectedly before finishing this task."
    )
    text += f"Failure # 2 (occurred at 2026-12-05_05-28-33)\n{memory}\n"
    assert error_summary(text) == memory.splitlines()[0]
    assert short_error(text) == memory.splitlines()[0]
