"""A front run's subnetwork as an MLflow model in the PyTorch flavour, loadable with
``mlflow.pytorch.load_model`` by anyone pointed at the store.

Torch is imported on first use only: the read-only commands import ``archsearch.tracking``
and must start fast.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow

from archsearch.tracking.store import run_artifacts


def log_pytorch_model(client: mlflow.MlflowClient, run_id: str) -> str:
    """Rebuild a run's subnetwork from its own artifacts (subnetwork.json + safetensors, no
    pickles) and log it as ``model`` in the PyTorch flavour (torch.export format); returns its
    model URI."""
    import torch

    from archsearch.subnetwork import rebuild_subnetwork

    run = client.get_run(run_id)
    with tempfile.TemporaryDirectory(prefix="archsearch-model-") as tmp:
        names = ("subnetwork.json", "weights.safetensors")
        folder = run_artifacts(client, run, names, Path(tmp))
        description = json.loads((folder / "subnetwork.json").read_text())
        model = rebuild_subnetwork(description, folder / "weights.safetensors")
    shape = tuple(description["model"]["input_shape"])
    # batch of 2: torch.export turns a batch of 1 into a constant instead of a dynamic dimension
    example = torch.randn((2, *shape), generator=torch.Generator().manual_seed(0)).numpy()
    # Created here, in the run's experiment: left to itself, MLflow 3.17 files a model logged
    # for a run that is not the fluent "active run" under the Default experiment.
    logged = client.create_logged_model(
        run.info.experiment_id, name="model", source_run_id=run_id, params=run.data.params
    )
    with _global_tracking_uri(client.tracking_uri):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=example,
            run_id=run_id,
            model_id=logged.model_id,
            pip_requirements=_pip_requirements(),
        )
    return info.model_uri


def warm_up_model_logging() -> threading.Thread:
    """Load, in a background thread, what the first model a process logs waits for: torch's
    exporter (it imports torch._dynamo) and MLflow's map of the installed packages, which it
    builds once per process to check the model's requirements. Started while the trials
    train, it takes ~5 s (2-vCPU machine) off the search's end; a later log costs ~0.3 s."""
    thread = threading.Thread(target=_load_model_logging, name="archsearch-model-log-warm-up")
    thread.daemon = True
    thread.start()
    return thread


def _load_model_logging() -> None:
    # Only a speed-up: whatever fails here fails again, with its message, in the real log.
    with contextlib.suppress(Exception):
        # torch.export.export imports its tracer (and torch._dynamo) on its first call
        importlib.import_module("torch.export._trace")
        from mlflow.utils import requirements_utils

        requirements_utils.warn_dependency_requirement_mismatches(_pip_requirements())


def _pip_requirements() -> list[str]:
    """The flavour's own defaults, given explicitly: left to infer them, MLflow loads the model
    in a subprocess first, which costs 10-15 s per model here (vs. well under 1 s)."""
    return mlflow.pytorch.get_default_pip_requirements()


@contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """``mlflow.pytorch.log_model`` reads the tracking URI from MLflow's global state only;
    set it for the call and put back both it and the environment variable that
    ``set_tracking_uri`` writes (None unsets it: nobody had set one)."""
    saved_env = os.environ.get("MLFLOW_TRACKING_URI")
    saved_uri = mlflow.get_tracking_uri() if mlflow.tracking.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_uri)
        if saved_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved_env
