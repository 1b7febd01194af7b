"""``archsearch ui``: the MLflow UI on the store a search logged to, with the front easy to find.

A thin wrapper over ``mlflow ui``: the same store as ``archsearch search`` (no URI to retype),
bound to 127.0.0.1 unless told otherwise, one worker and no GenAI job runner (a local UI needs
neither, and they cost seconds of start-up and several processes), and links that open the
experiment, the runs table filtered to the front, and the search's dashboard inside the UI.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
from types import FrameType
from typing import Any

from archsearch.commands._common import add_tracking_uri
from archsearch.errors import ConfigError


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "ui",
        help="start the MLflow UI on the search store, with links to the front and dashboard",
        description=(
            "Start the MLflow UI on the store `archsearch search` logs to. With NAME, print "
            "links that open the runs table already filtered to the front of NAME's latest "
            "search (and to the front of each granularity), and the search's dashboard.html "
            "inside the UI. Runs on the Pareto front carry the tag archsearch.pareto = "
            "'true'; each search's parent run holds dashboard.html, pareto.csv and the "
            "hypervolume curve. Stop it with Ctrl-C."
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
    from archsearch.tracking import require_store, resolve_tracking_uri, store_errors

    uri = resolve_tracking_uri(args.tracking_uri)
    require_store(uri)
    server = uri.startswith(("http://", "https://"))
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    base = uri.rstrip("/") if server else f"http://{host}:{args.port}"
    with store_errors(uri):
        links = search_links(uri, base, args.name) if args.name else [f"open {base}/", _HINT]
    if server:
        print(f"{uri} is an MLflow server with its own UI: {links[0]}")
        print("\n".join(links[1:]))
        return 0
    _check_port_free(args.host, args.port)
    print(f"MLflow UI on {uri}")
    print("\n".join(links))
    print("stop it with Ctrl-C", flush=True)
    return _serve(uri, args.host, args.port)


_HINT = (
    "the front: in an experiment's runs table, search  tags.archsearch.pareto = 'true'  (or "
    "give NAME for links straight to it)"
)


def search_links(uri: str, base: str, name: str) -> list[str]:
    """The lines that take a user to a search in the UI at ``base``: the experiment, its
    latest search's front (tag-filtered, so it stays current while the search runs), the
    front of each granularity (by run id, as of now: no tag marks those) and the dashboard."""
    from archsearch.dashboard import ARTIFACT_NAME
    from archsearch.tracking import (
        StoredSearch,
        artifact_names,
        artifact_url,
        experiment_url,
        find_experiment_id,
        latest_parent_run,
        open_client,
        rows_of_search,
    )

    client = open_client(uri)
    experiment_id = find_experiment_id(client, name)
    lines = [f"open {experiment_url(base, experiment_id)}"]
    parent = latest_parent_run(client, experiment_id)
    if parent is None:
        return [*lines, f"(experiment {name!r} holds no archsearch search yet)"]
    rows = rows_of_search(StoredSearch(client, uri, experiment_id, parent))
    lines += _front_lines(base, experiment_id, parent, rows)
    if ARTIFACT_NAME in artifact_names(client, parent.info.run_id):
        url = artifact_url(base, experiment_id, parent.info.run_id, ARTIFACT_NAME)
        lines.append(f"the dashboard: {url}")
    else:
        lines.append(
            f"the dashboard: logged when the search ends; for one now: archsearch dashboard "
            f"{shlex.quote(name)} -o dashboard.html"
        )
    lines.append("the trade-off: Chart view → add a scatter chart with x = flops, y = val_accuracy")
    return lines


def _front_lines(
    base: str, experiment_id: str, parent: Any, rows: list[dict[str, Any]]
) -> list[str]:
    """The search's front (tag-filtered) and, with more than one granularity, each one's."""
    from archsearch.pareto import fronts_by, parse_objectives
    from archsearch.tracking import OBJECTIVES_TAG, filtered_runs_url, front_filter, runs_filter

    parent_id, search = parent.info.run_id, parent.info.run_name or parent.info.run_id
    on_front = sum(row["on_front"] for row in rows)
    front = filtered_runs_url(base, experiment_id, front_filter(parent_id), order_by="flops")
    lines = [f"the front of {search} ({on_front} runs, cheapest first): {front}"]
    objectives = parse_objectives(parent.data.tags.get(OBJECTIVES_TAG))
    fronts = fronts_by(rows, "granularity", objectives)
    if len(fronts) > 1:  # with one granularity its front is the front
        lines.append("the front of each granularity (these runs as of now):")
        for granularity, members in fronts.items():
            ids = [row["run_id"] for row in members]
            url = filtered_runs_url(base, experiment_id, runs_filter(ids), order_by="flops")
            lines.append(f"  {granularity} ({len(ids)} runs): {url}")
    return lines


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
