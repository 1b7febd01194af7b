"""The tracking server goes away during a search: trials go on, their results wait on the
driver, and reach MLflow when it answers; a server away past the limit stops the search as
interrupted, and --resume logs what waited. A real ``mlflow server`` on 127.0.0.1, killed and
started again on the same port and store.
"""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import free_port, kill_group, start_cli, tiny_space, wait_for_log, write_space

from archsearch.tracking.outage import Outage

TRIALS = 12

#: trials of a couple of seconds: several end while the server is away
SPACE = tiny_space(
    "outage",
    model={"name": "mlp", "options": {"hidden": [64]}},
    data={"name": "synthetic", "options": {"n_samples": 2048}},
    trials=TRIALS,
    train={"epochs": 10, "finetune_epochs": 0, "batch_size": 64, "lr": 0.01, "gate_lr": 0.1},
)


# -- the queue itself, against a real HTTP server that comes and goes ----------------------------


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _serve(port: int) -> http.server.HTTPServer:
    server = http.server.HTTPServer(("127.0.0.1", port), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_writes_wait_while_the_server_is_away_and_go_in_order_when_it_answers() -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    lines: list[str] = []
    written: list[int] = []
    outage = Outage(uri, emit=lines.append, limit_s=60)

    def write(i: int) -> None:
        urllib.request.urlopen(f"{uri}/write", timeout=2).close()  # refused while away
        written.append(i)

    errors: list[str] = []
    for i in range(3):
        outage.submit(f"trial {i}", lambda i=i: write(i), errors.append)
    assert outage.waiting == 3 and written == [] and errors == []
    assert len(lines) == 1 and re.match(rf"MLflow at {uri}: not answering since ", lines[0])
    assert "3 trials waiting" not in lines[0]  # said once, when the outage began (1 waiting)
    outage.poll()  # not due yet, or still away: nothing happens, nothing blocks
    assert outage.waiting == 3

    server = _serve(port)
    try:
        deadline = time.monotonic() + 10
        while outage.waiting and time.monotonic() < deadline:
            outage.poll()
            time.sleep(0.1)
        assert written == [0, 1, 2] and errors == []
        assert len(lines) == 2 and re.fullmatch(
            rf"MLflow at {uri} back after \d+ s; logged 3 waiting trials", lines[1]
        )
        outage.submit("trial 3", lambda: write(3), errors.append)  # straight through now
        assert written == [0, 1, 2, 3] and outage.waiting == 0
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_away_past_the_limit_stops_the_search_once() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    lines: list[str] = []
    stops: list[bool] = []
    outage = Outage(uri, emit=lines.append, limit_s=0.5)
    outage.on_give_up = lambda: stops.append(True)

    def refused() -> None:
        urllib.request.urlopen(uri, timeout=2).close()

    outage.submit("trial a", refused, lines.append)
    time.sleep(0.6)
    outage.poll()
    outage.poll()
    outage.drain()  # returns at once: it gave up
    assert outage.gave_up and stops == [True] and outage.waiting == 1
    assert "stopping the search" in lines[-1]
    with pytest.raises(Exception, match=r"did not answer for 0 s.*--resume"):
        outage.call(refused)


def test_an_error_of_the_write_itself_is_reported_not_queued() -> None:
    """A store that answers (here: no server at all, a local store) but refuses one write."""
    outage = Outage("sqlite:///unused.db", emit=print, limit_s=60)
    errors: list[str] = []

    def bad() -> None:
        raise ValueError("metric value is not a number")

    outage.submit("trial x", bad, errors.append)
    assert outage.waiting == 0
    assert errors == ["trial x was not logged to MLflow: metric value is not a number"]


# -- a real search, a real server ----------------------------------------------------------------


def _start_server(folder: Path, port: int) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:port over a SQLite store in ``folder``, answering."""
    folder.mkdir(exist_ok=True)
    store = ["--backend-store-uri", f"sqlite:///{folder}/server.db"]
    artifacts = ["--artifacts-destination", str(folder / "artifacts")]
    address = ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", *address, *store, *artifacts],
        cwd=folder,
        env=_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),  # no job runners: starts faster
        stdout=subprocess.DEVNULL,
        stderr=(folder / "server.log").open("a"),
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
            return server
        except OSError:
            assert server.poll() is None, (folder / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.3)


def _children(uri: str, name: str) -> tuple[list, list]:
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    every = client.search_runs([experiment.experiment_id])
    parents = [r for r in every if r.data.tags.get("archsearch.parent") == "true"]
    return parents, [r for r in every if "archsearch.trial_id" in r.data.tags]


def _env(**extra: str) -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.slow  # two server starts (10-20 s each on two cores) and a 12-trial search
def test_a_search_outlives_a_server_outage_and_logs_every_trial(tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    write_space(tmp_path, SPACE)
    server = _start_server(tmp_path / "server", port)
    search, log = start_cli(tmp_path, "search", "space.yaml", "--tracking-uri", uri, env=_env())
    try:
        wait_for_log(log, rf"^\[ ?1/{TRIALS} done", search, timeout=300)
        kill_group(server)  # gone, as a crashed or redeployed server is
        server.wait()
        away = time.monotonic()
        wait_for_log(log, r"not answering since", search, timeout=60)
        time.sleep(max(0.0, 12 - (time.monotonic() - away)))
        server = _start_server(tmp_path / "server", port)  # same port, same store
        assert search.wait(timeout=300) == 0, log.read_text()[-3000:]
        text = log.read_text()
        parents, children = _children(uri, "outage")
    finally:
        kill_group(search)
        kill_group(server)
    assert text.count("not answering since") == 1, text
    back = re.search(r"back after (\d+) s; logged (\d+) waiting trials", text)
    assert back, text
    ended_meanwhile = int(back.group(2))
    assert ended_meanwhile >= 2, text  # the search went on while the server was away
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_ids = [r.data.tags["archsearch.trial_id"] for r in children]
    assert len(trial_ids) == TRIALS and len(set(trial_ids)) == TRIALS  # none lost, none twice
    assert all(r.info.status == "FINISHED" for r in children)
    assert "Traceback" not in text and "warning" not in text
    print(
        f"\noutage figures: trials requested {TRIALS}, finished "
        f"{sum(r.info.status == 'FINISHED' for r in children)}, failed "
        f"{sum(r.info.status == 'FAILED' for r in children)}, waiting during the outage "
        f"{ended_meanwhile}, logged after {ended_meanwhile}, server away {back.group(1)} s, "
        f"lost {TRIALS - len(set(trial_ids))}"
    )


@pytest.mark.slow
def test_a_server_away_past_the_limit_interrupts_and_resume_logs_what_waited(
    tmp_path: Path,
) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    write_space(tmp_path, SPACE)
    server = _start_server(tmp_path / "server", port)
    env = _env(ARCHSEARCH_MLFLOW_OUTAGE_LIMIT="3")
    first, log = start_cli(tmp_path, "search", "space.yaml", "--tracking-uri", uri, env=env)
    try:
        wait_for_log(log, rf"^\[ ?1/{TRIALS} done", first, timeout=300)
        kill_group(server)
        server.wait()
        code = first.wait(timeout=120)
    finally:
        kill_group(first)
    text = log.read_text()
    assert code == 2, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"archsearch search: error: MLflow at {uri} did not answer for 3 s .*--resume.*", last
    ), text[-3000:]
    waited = int(re.search(r"with (\d+) ended trials not yet logged", last).group(1))

    server = _start_server(tmp_path / "server", port)
    second, log = start_cli(tmp_path, "search", "space.yaml", "--resume", env=_env())
    try:
        assert second.wait(timeout=300) == 0, log.read_text()[-3000:]
        parents, children = _children(uri, "outage")
    finally:
        kill_group(second)
        kill_group(server)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trial_ids = [r.data.tags["archsearch.trial_id"] for r in children]
    assert len(trial_ids) == TRIALS and len(set(trial_ids)) == TRIALS
    print(f"\nlimit figures: trials requested {TRIALS}, waiting at the stop {waited}, lost 0")
