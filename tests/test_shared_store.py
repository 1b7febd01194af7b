"""Two searches, one store: the default SQLite file of one folder, written by two drivers.

Different names: both finish with every run, and "database is locked" never reaches the user.
The same name twice while the first runs: one line, exit 2, not two drivers on one parent run.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pytest
from conftest import kill_group, start_cli, tiny_space, wait_for_log, write_space
from sqlalchemy import create_engine, text

from archsearch.tracking import SearchTracker
from archsearch.tracking.driver import driver_state, this_driver
from archsearch.tracking.retry import retry_busy

TRIALS = 6


def _space(name: str, epochs: int = 2, samples: int = 1024, trials: int = TRIALS) -> dict:
    return tiny_space(
        name,
        trials=trials,
        concurrency=1,
        data={"name": "synthetic", "options": {"n_samples": samples}},
        train={"epochs": epochs, "finetune_epochs": 0, "batch_size": 64, "gate_lr": 0.1},
    )


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def test_a_locked_sqlite_file_is_waited_out(tmp_path: Path) -> None:
    """A real lock held by another connection: the write is refused at once (no busy timeout
    here), retried with back-off, and lands once the lock is gone."""
    path = tmp_path / "busy.db"
    sqlite3.connect(path).execute("create table t (x)").connection.commit()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("begin exclusive")
    threading.Timer(0.5, lambda: holder.execute("commit")).start()
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    attempts = []

    def insert() -> None:
        attempts.append(time.monotonic())
        with engine.begin() as connection:
            connection.execute(text("insert into t values (1)"))

    retry_busy(insert)
    assert len(attempts) > 1  # refused at least once: the lock was real
    assert sqlite3.connect(path).execute("select count(*) from t").fetchone() == (1,)


def test_a_drivers_liveness_is_read_from_its_tag(tmp_path: Path) -> None:
    assert driver_state(this_driver()) == "self"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tag = this_driver().replace(f'"pid": {os.getpid()}', f'"pid": {sleeper.pid}')
        start = Path(f"/proc/{sleeper.pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        tag = tag.replace(tag.split('"start": ')[1].rstrip("}"), f'"{start}"')
        assert driver_state(tag) == "alive"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert driver_state(tag) == "gone"
    assert driver_state('{"host": "elsewhere", "pid": 1, "start": null}') == "unknown"
    assert driver_state(None) == "unknown"


@pytest.mark.slow  # two Ray searches at once on two cores
def test_two_searches_with_different_names_share_the_default_store(tmp_path: Path) -> None:
    for name in ("shared-a", "shared-b"):
        write_space(tmp_path, _space(name), name=f"{name}.yaml")
    started = time.monotonic()
    searches = [
        start_cli(tmp_path, "search", f"{name}.yaml", env=_env())
        for name in ("shared-a", "shared-b")
    ]
    try:
        codes = [process.wait(timeout=400) for process, _ in searches]
    finally:
        for process, _ in searches:
            kill_group(process)
    seconds = time.monotonic() - started
    logs = [log.read_text() for _, log in searches]
    assert codes == [0, 0], [log[-3000:] for log in logs]
    for log in logs:
        assert "database is locked" not in log and "Traceback" not in log, log[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for name in ("shared-a", "shared-b"):
        experiment = client.get_experiment_by_name(name)
        runs = client.search_runs([experiment.experiment_id])
        parents = [r for r in runs if r.data.tags.get("archsearch.parent") == "true"]
        children = [r for r in runs if "archsearch.trial_id" in r.data.tags]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        assert len({r.data.tags["archsearch.trial_id"] for r in children}) == TRIALS
        assert len(children) == TRIALS
        assert all(r.info.status in ("FINISHED", "FAILED") for r in children)
    print(f"\ntwo searches: 2 x {TRIALS} trials in one store, both exit 0, {seconds:.0f} s, lost 0")


@pytest.mark.slow
def test_the_same_name_twice_is_one_line_and_a_dead_drivers_search_resumes(
    tmp_path: Path,
) -> None:
    # Many long trials: on an idle machine six of them ended before the refused second
    # search was done, and the first search's parent run was FINISHED, not left RUNNING.
    write_space(tmp_path, _space("twice", epochs=60, samples=4096, trials=100))
    first, log = start_cli(tmp_path, "search", "space.yaml", env=_env())
    try:
        wait_for_log(log, r"^\[ *1/100 done", first, timeout=300)
        second = subprocess.run(
            [sys.executable, "-m", "archsearch.cli", "search", "space.yaml", "--storage", "other"],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert first.poll() is None, "the first search must still run"
    finally:
        kill_group(first)  # a driver that dies: its parent run stays RUNNING
        first.wait()
    assert second.returncode == 2, second.stderr[-3000:]
    lines = second.stderr.strip().splitlines()
    assert lines[-1].startswith("archsearch search: error: a search named 'twice' is running")
    assert "Traceback" not in second.stderr
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("twice")
    parents = client.search_runs([experiment.experiment_id], "tags.archsearch.parent = 'true'")
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"  # the second added none
    # the driver is gone: its RUNNING parent is stale, resumable, and no longer blocks a search
    resumed = SearchTracker("twice", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", resume=True)
    assert resumed.parent_run_id == parents[0].info.run_id
