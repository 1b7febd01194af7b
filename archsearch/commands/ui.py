"""``archsearch ui``: the MLflow UI on the store a search logged to, with the front easy to find.

A thin wrapper over ``mlflow ui``: the same store as ``archsearch search`` (no URI to retype),
bound to 127.0.0.1 unless told otherwise, one worker and no GenAI job runner (a local UI needs
neither, and they cost seconds of start-up and several processes), and the URL of the
experiment plus how to see the front there.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from types import FrameType

from archsearch.commands._common import add_tracking_uri
from archsearch.errors import ConfigError


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "ui",
        help="start the MLflow UI on the search store (front runs are tagged)",
        description=(
            "Start the MLflow UI on the store `archsearch search` logs to. Runs on the Pareto "
            "front carry the tag archsearch.pareto = 'true'; each search's parent run holds "
            "dashboard.html, pareto.csv and the hypervolume curve. Stop it with Ctrl-C."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "name", nargs="?", metavar="NAME", help="experiment to open: the search space's `name`"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes it")
    p.add_argument("--port", type=int, default=5000)
    add_tracking_uri(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from archsearch.tracking import (
        find_experiment_id,
        open_client,
        require_store,
        resolve_tracking_uri,
        store_errors,
    )

    uri = resolve_tracking_uri(args.tracking_uri)
    require_store(uri)
    with store_errors(uri):
        exp = find_experiment_id(open_client(uri), args.name) if args.name else None
    if uri.startswith(("http://", "https://")):
        print(f"{uri} is an MLflow server with its own UI: open {_url(uri, exp)}")
        print(_how_to_see_the_front())
        return 0
    _check_port_free(args.host, args.port)
    base = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}"
    print(f"MLflow UI on {uri}")
    print(f"open {_url(base, exp)}")
    print(_how_to_see_the_front())
    print("stop it with Ctrl-C", flush=True)
    return _serve(uri, args.host, args.port)


def _url(base: str, experiment_id: str | None) -> str:
    base = base.rstrip("/")
    # MLflow 3 opens an experiment on its overview page; /runs goes straight to the runs table
    return f"{base}/#/experiments/{experiment_id}/runs" if experiment_id else f"{base}/"


def _how_to_see_the_front() -> str:
    return (
        "the front: in the experiment's runs table, search  tags.archsearch.pareto = 'true'\n"
        "the trade-off: Chart view → add a scatter chart with x = flops, y = val_accuracy\n"
        "the summary: open the search-<time> parent run → Artifacts → dashboard.html, pareto.csv;"
        " Metrics → hypervolume"
    )


def _check_port_free(host: str, port: int) -> None:
    """mlflow ui would print a long traceback several seconds later; say it in one line now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise ConfigError(
                f"cannot serve on {host}:{port} ({error.strerror}); pick another --port"
            ) from None


def _serve(uri: str, host: str, port: int) -> int:
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    server = subprocess.Popen(command, env=env)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return server.wait()
    except KeyboardInterrupt:
        return _stop(server)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM takes the Ctrl-C path, so the server is stopped rather than orphaned."""
    raise KeyboardInterrupt


def _stop(server: subprocess.Popen) -> int:
    """mlflow ui forwards SIGTERM to its uvicorn workers and waits for them."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    return 0
