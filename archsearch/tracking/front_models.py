"""A front run's model logged at the end of a search, where one failure loses nothing.

Logging a model costs seconds (the first in a process ~5 s on the 2-vCPU machine: torch's
exporter and MLflow's package scan load; later ones ~0.3 s), so only the final front's runs
get one. Logging them from a background thread as runs join the front was tried and taken
back: with it, the outage and Ctrl-C resume tests ran 16-22 s longer each on the 2-vCPU
machine (a thread that logs while the server is away, or while the trials need both cores,
is the likely cause; not profiled further).
"""

from __future__ import annotations

import sys

import mlflow

from archsearch.errors import first_line
from archsearch.tracking.model_log import log_pytorch_model
from archsearch.tracking.store import MODEL_TAG

#: what a run whose model could not be exported is tagged with (the first line of the error)
MODEL_ERROR_TAG = "archsearch.model_error"


def log_front_model(client: mlflow.MlflowClient, run_id: str) -> None:
    """Log one run's model and tag the run with its URI, unless an earlier finish of a
    resumed search did. A model that cannot be exported is tagged and warned about instead,
    so one model never loses the search."""
    if MODEL_TAG in client.get_run(run_id).data.tags:
        return
    try:
        model_uri = log_pytorch_model(client, run_id)
    except Exception as error:
        client.set_tag(run_id, MODEL_ERROR_TAG, first_line(error)[:500])
        print(
            f"archsearch: warning: could not log the model of run {run_id} in MLflow: "
            f"{first_line(error)}",
            file=sys.stderr,
        )
        return
    client.set_tag(run_id, MODEL_TAG, model_uri)
