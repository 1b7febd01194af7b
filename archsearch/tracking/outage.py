"""A tracking server that stops answering: trials wait on the driver, the search goes on.

A search runs for hours; an MLflow server restarted, redeployed or briefly unreachable must
not stop it, slow it down, or lose a trial. ``Outage`` queues each write that failed while the
server does not answer (and every later one, in order), tries the server again with back-off
(1 s doubling to ``RETRY_S``), and writes the queue once it answers, with one line when the
outage starts and one when it ends. The files a waiting write needs stay in the trial's Ray
checkpoint, so a driver killed meanwhile loses nothing: ``--resume`` logs every ended trial
its store lacks. A server away longer than ``limit_s`` ends the search as interrupted.

An error while the server answers is the write's own (a bad value, a full disk): it is not
retried but reported to the write's ``on_error``, as before. Nothing here knows Ray.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from archsearch.errors import first_line
from archsearch.tracking.store import TrackingError, server_error

#: seconds a server may stay away before the search stops (interrupted, resumable)
LIMIT_ENV = "ARCHSEARCH_MLFLOW_OUTAGE_LIMIT"
DEFAULT_LIMIT_S = 600.0
#: the longest wait between two tries of a server that does not answer
RETRY_S = 5.0

_T = TypeVar("_T")


class StoreOutage(TrackingError):
    """The tracking server stayed away past the limit: the search stopped, resumable."""


class _Write(NamedTuple):
    label: str
    write: Callable[[], Any]
    on_error: Callable[[str], None]


def outage_limit() -> float:
    """``$ARCHSEARCH_MLFLOW_OUTAGE_LIMIT`` seconds, else 10 minutes."""
    text = os.environ.get(LIMIT_ENV, "")
    try:
        return float(text) if text else DEFAULT_LIMIT_S
    except ValueError:
        raise TrackingError(f"${LIMIT_ENV} must be a number of seconds, not {text!r}") from None


def _fail_fast(uri: str) -> None:
    """MLflow retries a refused HTTP call 7 times over about 4 minutes, inside the call: the
    search's loop would stand still that long before its first queued write. Two quick
    retries ride out a blip; ``Outage`` takes over after that. A user's own settings win."""
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class Outage:
    """The writes waiting for one tracking server, and whether it is away (see module)."""

    def __init__(
        self, uri: str, emit: Callable[[str], None] = _stderr, limit_s: float | None = None
    ) -> None:
        self.uri = uri
        self.emit = emit
        _fail_fast(uri)
        self.limit_s = outage_limit() if limit_s is None else limit_s
        #: called once when the server stayed away past the limit (the search stops itself)
        self.on_give_up: Callable[[], None] = lambda: None
        self.gave_up = False
        self.outages = 0
        self._queue: deque[_Write] = deque()
        self._since: float | None = None  # monotonic start of the current outage
        self._next_try = 0.0
        self._wait = 1.0
        self._written = 0  # queued writes written during the current outage

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def answering(self) -> bool:
        return server_error(self.uri) is None

    def submit(self, label: str, write: Callable[[], Any], on_error: Callable[[str], None]) -> None:
        """Write now, or queue behind the writes already waiting; ``on_error`` gets the one
        line of an error that is the write's own."""
        entry = _Write(label, write, on_error)
        if self._queue or self.gave_up:
            self._queue.append(entry)
            return
        try:
            write()
        except Exception as error:
            if self.answering():
                on_error(f"{label} was not logged to MLflow: {first_line(error)}")
                return
            self._queue.append(entry)
            self._begin()

    def poll(self) -> None:
        """Cheap when nothing waits; otherwise, when a try is due, ask the server and write the
        queue if it answers. Called from the search's loop, so it never sleeps."""
        if not self._queue or self.gave_up:
            return
        if self._past_limit():
            return
        if time.monotonic() >= self._next_try:
            self._try_flush()

    def drain(self) -> None:
        """Wait until every queued write is written, or the limit is past (the end of a
        search: its trials have ended, the front and the parent run come next)."""
        while self._queue and not self.gave_up:
            self.poll()
            time.sleep(0.2)

    def call(self, fn: Callable[[], _T]) -> _T:
        """``fn()``, called again whenever it failed because the server does not answer, until
        the limit; then ``StoreOutage``. For the end of a search (models, parent run)."""
        while True:
            if self.gave_up:
                raise self.error()
            try:
                return fn()
            except Exception:
                if self.answering():
                    raise
            self._begin()
            while not self._past_limit() and not self.answering():
                time.sleep(self._backoff())
            if self.gave_up:
                raise self.error()
            self._end()

    def error(self) -> StoreOutage:
        """What the user reads when the search stopped because the server stayed away."""
        return StoreOutage(
            f"MLflow at {self.uri} did not answer for {_duration(self.limit_s)} (${LIMIT_ENV}): "
            f"the search stopped, interrupted, with {self.waiting} ended trials not yet logged "
            f"(kept in Ray's storage); once the server answers, run the same command with "
            f"--resume to log them and continue"
        )

    # -- the outage's course -------------------------------------------------------------

    def _begin(self) -> None:
        if self._since is not None:
            return
        self._since, self._wait = time.monotonic(), 1.0
        self._next_try = self._since + self._wait
        self.outages += 1
        self.emit(
            f"MLflow at {self.uri}: not answering since {datetime.now():%H:%M:%S} "
            f"({server_error(self.uri) or 'a call failed'}); {self.waiting} trials waiting, "
            f"retrying every {RETRY_S:.0f} s while the search goes on (limit "
            f"{_duration(self.limit_s)})"
        )

    def _end(self) -> None:
        if self._since is None:
            return
        away, written = time.monotonic() - self._since, self._written
        self._since, self._written = None, 0
        done = f"logged {written} waiting trials" if written else "going on"
        self.emit(f"MLflow at {self.uri} back after {_duration(away)}; {done}")

    def _backoff(self) -> float:
        wait, self._wait = self._wait, min(self._wait * 2, RETRY_S)
        return wait

    def _past_limit(self) -> bool:
        if self._since is None or time.monotonic() - self._since <= self.limit_s:
            return False
        if not self.gave_up:
            self.gave_up = True
            self.emit(
                f"MLflow at {self.uri}: not answering for {_duration(self.limit_s)}; stopping "
                f"the search: {self.waiting} ended trials wait in Ray's storage for --resume"
            )
            self.on_give_up()
        return True

    def _try_flush(self) -> None:
        if not self.answering():
            self._next_try = time.monotonic() + self._backoff()
            return
        while self._queue:
            entry = self._queue[0]
            try:
                entry.write()
            except Exception as error:
                if not self.answering():
                    self._next_try = time.monotonic() + self._backoff()
                    return
                entry.on_error(f"{entry.label} was not logged to MLflow: {first_line(error)}")
            self._queue.popleft()
            self._written += 1
        self._end()
