"""A SQLite store shared by several searches: wait out "database is locked" instead of failing.

SQLite has one writer at a time. MLflow sets a 20 s busy timeout on its sessions, but a
transaction that read before it writes is refused at once while another one writes (SQLite's
rule against deadlocks), and MLflow raises that as an ``MlflowException`` wrapping SQLAlchemy's
``OperationalError``. Every call the search makes goes through ``retry_busy`` instead.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import mlflow
from mlflow.exceptions import MlflowException
from sqlalchemy.exc import SQLAlchemyError

#: how long one store call waits out a SQLite file that other searches keep busy
BUSY_LIMIT_S = 120.0
_T = TypeVar("_T")


def _is_busy(error: BaseException) -> bool:
    text = str(error).lower()
    return "database is locked" in text or "database table is locked" in text


def retry_busy(call: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """``call(*args, **kwargs)``, again with back-off (50 ms doubling to 2 s, jittered, for up
    to ``BUSY_LIMIT_S``) while SQLite refuses with "database is locked". SQLite has one writer
    at a time; MLflow sets a 20 s busy timeout, but a transaction that read before writing is
    refused at once when another one writes (SQLite's deadlock rule), and MLflow then raises.
    A refused transaction was rolled back, so calling again writes once."""
    delay, deadline = 0.05, time.monotonic() + BUSY_LIMIT_S
    while True:
        try:
            return call(*args, **kwargs)
        except (MlflowException, SQLAlchemyError) as error:
            if not _is_busy(error) or time.monotonic() > deadline:
                raise
        time.sleep(delay * random.uniform(1.0, 1.5))
        delay = min(delay * 2, 2.0)


class RetryingClient(mlflow.MlflowClient):
    """An ``MlflowClient`` whose public methods go through ``retry_busy``: every store call of
    a search waits out other searches writing to the same SQLite file."""

    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name.startswith("_") or not callable(value):
            return value
        return functools.partial(retry_busy, value)


def drop_busy_records(record: logging.LogRecord) -> bool:
    """MLflow logs a refused transaction with its traceback before raising it; ``retry_busy``
    calls again, so the user must not see it."""
    return not _is_busy(Exception(record.getMessage()))


@contextmanager
def init_lock(path: Path) -> Iterator[None]:
    """An exclusive lock per database file, held while a process opens the store the first
    time (where MLflow creates the tables of an empty file). POSIX only, like ``fcntl``."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, the retries remain
        yield
        return
    key = hashlib.sha256(str(path).encode()).hexdigest()[:16]
    with open(Path(tempfile.gettempdir()) / f"archsearch-mlflow-{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
