"""One live search per name: which driver process owns a RUNNING parent run.

Two drivers writing to one parent run would fight over its tags, its ``pareto.csv`` and the
trial ids it holds. The parent run records its driver (host, pid, and the process's start
time, so a recycled pid is not taken for it); a search refuses to start or resume while a
RUNNING parent run of its name has a driver alive on this host. A RUNNING parent whose driver
is gone (killed, out of memory) is stale: ``--resume`` takes it over, a new search starts
beside it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import mlflow
from mlflow.entities import Run, ViewType

from archsearch.tracking.store import PARENT_TAG, TrackingError

#: on a parent run: the driver process that writes it, as JSON {"host", "pid", "start"}
DRIVER_TAG = "archsearch.driver"


def this_driver() -> str:
    """The value of ``DRIVER_TAG`` for this process."""
    pid = os.getpid()
    return json.dumps({"host": socket.gethostname(), "pid": pid, "start": _start_time(pid)})


def _start_time(pid: int) -> str | None:
    """When a process started, in clock ticks since boot (Linux's /proc); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def driver_state(tag: str | None) -> str:
    """``"alive"``, ``"gone"``, ``"self"`` (this process) or ``"unknown"`` (another host, or
    a run from before the tag existed) for a parent run's ``DRIVER_TAG``."""
    try:
        driver = json.loads(tag or "")
        host, pid, start = driver["host"], int(driver["pid"]), driver.get("start")
    except (ValueError, KeyError, TypeError):
        return "unknown"
    if host != socket.gethostname():
        return "unknown"
    if pid == os.getpid():
        return "self"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass  # alive, owned by someone else
    if start is not None and _start_time(pid) not in (None, start):
        return "gone"  # the pid was recycled by another process
    return "alive"


def running_parents(client: mlflow.MlflowClient, experiment_id: str) -> list[Run]:
    """The parent runs of an experiment that are RUNNING, oldest first."""
    return client.search_runs(
        [experiment_id],
        filter_string=f"tags.{PARENT_TAG} = 'true' and attributes.status = 'RUNNING'",
        run_view_type=ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time ASC"],
    )


def require_no_live_driver(runs: list[Run], experiment: str, uri: str) -> None:
    """One line, exit 2, when another driver on this host is running a search of this name;
    a warning when a RUNNING parent's driver is on another host (it cannot be checked)."""
    for run in runs:
        tag = run.data.tags.get(DRIVER_TAG)
        state = driver_state(tag)
        if state == "alive":
            driver = json.loads(tag or "{}")
            raise TrackingError(
                f"a search named {experiment!r} is running now in {uri} (parent run "
                f"{run.info.run_id}, driver pid {driver.get('pid')} on this machine); wait for "
                f"it to end or stop it, or give this space another `name`"
            )
        if state == "unknown" and tag:
            host = json.loads(tag).get("host")
            print(
                f"archsearch: warning: parent run {run.info.run_id} of {experiment!r} is RUNNING "
                f"with its driver on {host}, which this machine cannot check; if that search "
                f"still runs, stop this one",
                file=sys.stderr,
            )
