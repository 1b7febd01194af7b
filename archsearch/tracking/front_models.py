"""The front's models in MLflow's PyTorch flavour, logged while the search runs.

Logging a model costs seconds (the first one in a process ~5 s on the 2-vCPU machine: torch's
exporter and MLflow's package scan load; later ones ~0.3 s), and only front members get one.
Left to the end of the search, that is seconds of waiting after the last trial. So each run
that joins the front is handed to one background thread as it joins, and the end of the
search logs only what that thread has not reached: the last changes. A run that joined the
front and left it again keeps its model (tagged ``archsearch.model`` like any other); the
``archsearch.pareto`` tag says which runs are on the front.

Nothing here holds the tracker's lock: the thread only reads a run's artifacts and writes its
model and tag. A failure in the background (a server away, say) leaves the run untagged, and
the end of the search tries it again in the foreground, where an error is reported.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
from collections.abc import Iterable

import mlflow

from archsearch.errors import first_line
from archsearch.tracking.model_log import log_pytorch_model
from archsearch.tracking.store import MODEL_TAG

#: what a run whose model could not be exported is tagged with (the first line of the error)
MODEL_ERROR_TAG = "archsearch.model_error"


def log_front_model(client: mlflow.MlflowClient, run_id: str, *, report: bool = True) -> None:
    """Log one run's model and tag the run with its URI, unless it has one already (logged
    in the background, or by an earlier finish of a resumed search). ``report``: a model
    that cannot be exported is tagged and warned about instead of raising, so one model
    never loses the search."""
    if MODEL_TAG in client.get_run(run_id).data.tags:
        return
    try:
        model_uri = log_pytorch_model(client, run_id)
    except Exception as error:
        if not report:
            raise
        client.set_tag(run_id, MODEL_ERROR_TAG, first_line(error)[:500])
        print(
            f"archsearch: warning: could not log the model of run {run_id} in MLflow: "
            f"{first_line(error)}",
            file=sys.stderr,
        )
        return
    client.set_tag(run_id, MODEL_TAG, model_uri)


class FrontModels:
    """One background thread logging the models of runs as they join the front."""

    def __init__(self, client: mlflow.MlflowClient) -> None:
        self.client = client
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._offered: set[str] = set()
        self._closed = False
        self._thread: threading.Thread | None = None

    def offer(self, run_ids: Iterable[str]) -> None:
        """Queue the runs that just joined the front (each at most once); never waits."""
        if self._closed:
            return
        for run_id in sorted(set(run_ids) - self._offered):
            self._offered.add(run_id)
            self._queue.put(run_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="archsearch-front-models", daemon=True
                )
                self._thread.start()

    def close(self) -> None:
        """Stop taking runs and wait for the model being logged now; the runs still queued
        are left to the caller (the end of the search logs the front members among them)."""
        self._closed = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join()

    def _work(self) -> None:
        while (run_id := self._queue.get()) is not None:
            # a failure leaves the run untagged: the end of the search tries it and reports
            with contextlib.suppress(Exception):
                log_front_model(self.client, run_id, report=False)
