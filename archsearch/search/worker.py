"""The trial as Ray runs it, on a worker anywhere in the cluster.

``run_trial`` knows nothing of Ray; this wraps it for Tune: the sampled point becomes a
``TrialConfig``, the trial runs in a temporary folder and reports once, at its end, with
that folder as its checkpoint (multi-objective Optuna cannot prune on intermediate values,
and one report keeps the contract with the tracker simple). The driver logs the report.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from archsearch.config import TrialConfig
from archsearch.data import DataSplits
from archsearch.space import SearchSpec
from archsearch.trial import load_data, run_trial

#: the trainable's name; Ray checks that a restored search runs the same one
TRIAL_FUNCTION = "archsearch_trial"


def trainable(spec: SearchSpec) -> Any:
    """The function Tune runs per trial, with the resources the space file asks for."""

    def archsearch_trial(config: dict[str, Any]) -> None:
        run_one_trial(spec, config)

    archsearch_trial.__name__ = TRIAL_FUNCTION
    return tune.with_resources(archsearch_trial, {"cpu": spec.cpu, "gpu": spec.gpu})


def run_one_trial(spec: SearchSpec, config: dict[str, Any]) -> None:
    """One trial inside a Tune worker: run it, then report once with its files."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(spec.cpu)))
    trial_config = spec.trial_config(config)
    data = cached_data(trial_config)
    with tempfile.TemporaryDirectory(prefix="archsearch-trial-") as out:
        result = run_trial(trial_config, out_dir=Path(out), data=data)
        metrics = {
            **result.metrics,
            # the whole trial inside the worker: what the orchestration overhead is measured against
            "trial_seconds": time.perf_counter() - started,
            "node_ip": ray.util.get_node_ip_address(),
            # nodes of one machine share an IP; the node id tells them apart
            "node_id": ray.get_runtime_context().get_node_id(),
        }
        # report copies the folder into the trial's storage before it returns
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(out))


_DATA_CACHE: dict[tuple[Any, ...], DataSplits] = {}


def cached_data(config: TrialConfig) -> DataSplits:
    """Ray reuses a worker for the next trial; keeping the last data set loaded saves seconds
    (Fashion-MNIST) to minutes (CIFAR-10 from disk) per trial. One set only: memory."""
    key = (
        config.data,
        config.data_root,
        config.seed,
        config.val_fraction,
        json.dumps(config.data_options, sort_keys=True, default=str),
    )
    if key not in _DATA_CACHE:
        _DATA_CACHE.clear()
        _DATA_CACHE[key] = load_data(config)
    return _DATA_CACHE[key]
