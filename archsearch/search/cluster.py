"""The Ray session a search runs in: a local Ray of its own, or a running cluster joined by
its address. Both are checked up front, so a wrong address or a trial that no node can hold
is one line within seconds instead of minutes of waiting. Token authentication for joining a
cluster is settled earlier, before Ray loads (see ``archsearch.search.auth``)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import socket
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray

from archsearch.errors import ArchSearchError, first_line
from archsearch.user_code import is_import_path

if TYPE_CHECKING:
    from archsearch.space import SearchSpec

CONNECT_TIMEOUT_S = 3.0

#: never uploaded with a user's package: the search's own stores and caches
UPLOAD_EXCLUDES = ["mlflow.db", "mlruns/", "mlartifacts/", "ray_results/", "__pycache__/", ".git/"]


class ClusterError(ArchSearchError):
    """A Ray cluster that cannot be reached or cannot run a trial."""


@contextlib.contextmanager
def ray_session(spec: SearchSpec, address: str | None) -> Iterator[None]:
    """Ray for the length of one search: started (or joined) here and shut down after."""
    if ray.is_initialized():  # a caller's own Ray session (a notebook, say): use it, keep it
        yield
        return
    runtime_env = user_runtime_env(spec)
    if address is None:
        ray.init(
            address="local",  # never attach to some other cluster running on this machine
            num_cpus=max(1, math.ceil(spec.concurrency * spec.cpu)),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            runtime_env=runtime_env,
        )
    else:
        _connect(address, runtime_env)
    try:
        yield
    finally:
        ray.shutdown()


def _connect(address: str, runtime_env: dict[str, Any] | None) -> None:
    _require_listening(address)
    started = time.monotonic()
    try:
        ray.init(
            address=address,
            log_to_driver=False,
            logging_level=logging.ERROR,
            runtime_env=runtime_env,
        )
    except (ConnectionError, RuntimeError) as error:
        raise ClusterError(
            f"cannot join the Ray cluster at {address} after {time.monotonic() - started:.0f}s "
            f"({first_line(error)}); if its nodes use token authentication "
            f"(RAY_AUTH_MODE=token), this machine needs their token in ~/.ray/auth_token or "
            f"$RAY_AUTH_TOKEN"
        ) from None


def user_runtime_env(spec: SearchSpec) -> dict[str, Any] | None:
    """Ray's runtime environment carrying the user's own model and data modules (named by
    import path) to every worker: a worker on another machine has neither the driver's
    working folder nor its ``sys.path``. Only the module itself travels (its ``.py`` file, or
    its package folder without the search's stores), never the whole working folder, which
    may hold the data set. Installed packages are left to each node's environment."""
    names = [spec.base.model, spec.base.data]
    modules = sorted({_module_location(name) for name in names if is_import_path(name)} - {None})
    if not modules:
        return None
    return {"py_modules": modules, "excludes": list(UPLOAD_EXCLUDES)}


def _module_location(name: str) -> str | None:
    """The file or package folder of the top-level module of ``"pkg.mod:attr"``, found the
    way the import will find it (working folder first); None for an installed package."""
    top = name.partition(":")[0].split(".")[0]
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        found = None
    finally:
        if added:
            sys.path.remove(cwd)
    if found is None or found.origin in ("built-in", "frozen"):
        return None  # not importable here: the pre-flight has said so already
    if found.submodule_search_locations:  # a package (namespace packages have no origin)
        location = Path(next(iter(found.submodule_search_locations)))
    elif found.origin:
        location = Path(found.origin)
    else:
        return None
    installed = {sysconfig.get_paths()[key] for key in ("purelib", "platlib", "stdlib")}
    if any(location.is_relative_to(folder) for folder in installed):
        return None
    return str(location)


def _require_listening(address: str) -> None:
    """ray.init waits minutes for a head that is not there; a plain TCP connect says so in
    seconds."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected HOST:PORT, e.g. 10.0.0.5:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as error:
        raise ClusterError(
            f"no Ray head answers at {address} ({error.strerror or error}); start one with "
            f"`ray start --head --port={port}` there, or check --address"
        ) from None


def node_resources() -> list[dict[str, float]]:
    """Each live node's resources (``CPU``, ``GPU``, ...), as Ray's state API lists them."""
    return [n["Resources"] for n in ray.nodes() if n.get("Alive")]


def require_resources(spec: SearchSpec) -> None:
    """A trial asking for more than any node has would wait forever; say so now."""
    nodes = node_resources()
    if any(r.get("CPU", 0) >= spec.cpu and r.get("GPU", 0) >= spec.gpu for r in nodes):
        return
    have = ", ".join(f"{r.get('CPU', 0):g} CPU / {r.get('GPU', 0):g} GPU" for r in nodes)
    raise ClusterError(
        f"a trial needs {spec.cpu:g} CPU and {spec.gpu:g} GPU but no Ray node has that "
        f"(nodes: {have or 'none'}); lower resources.cpu / resources.gpu in {spec.source}"
    )


@contextlib.contextmanager
def quiet_ray() -> Iterator[None]:
    """The user reads our one line per trial; Ray's tables, tracebacks of failed trials
    (MLflow keeps them) and its save-state chatter would bury it."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the old reporter honours verbose=0
    quieter = {"ray.tune": logging.CRITICAL, "mlflow": logging.WARNING}
    loggers = {logging.getLogger(name): level for name, level in quieter.items()}
    saved = {logger: logger.level for logger in loggers}
    for logger, level in loggers.items():
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in saved.items():
            logger.setLevel(level)
