"""The trial as Ray runs it, on a worker anywhere in the cluster.

``run_trial`` knows nothing of Ray; this wraps it for Tune: the sampled point becomes a
``TrialConfig`` and the trial runs in a scratch folder (``scratch``). After each gated epoch it
reports an epoch report (no checkpoint; what a MOASHA rung ranks, see ``reports``); at its end it
reports its result with that folder as its checkpoint. The driver logs only the last one.
A trial a scheduler stops leaves at its next report (Tune raises SystemExit there).

Retries: Tune retries a trial on any failure (``FailureConfig(max_failures=retries)``), but
only a lost node or worker process should run a trial again; an exception of the trial's own
code is its result. Tune cannot tell the two apart (both reach it as errors of the trial's
actor), so the trial tells it: before re-raising its own exception it reports one result
marked ``OWN_ERROR``, and ``RetryPolicy`` on the driver, seeing it, uses up the trial's
retries. The exception then ends the trial as an error, logged as a FAILED run as before.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

import ray
import torch
from ray import tune

from archsearch.config import TrialConfig
from archsearch.data import DataSplits
from archsearch.errors import first_line, short_error
from archsearch.search.reports import epoch_report, trial_error_text
from archsearch.search.scratch import trial_folder
from archsearch.trial import load_data, run_trial

if TYPE_CHECKING:  # the driver's side: a worker never imports MLflow or the space parser
    from archsearch.search.callbacks import ProgressFn
    from archsearch.space import SearchSpec

#: the trainable's name; Ray checks that a restored search runs the same one
TRIAL_FUNCTION = "archsearch_trial"

#: the key of the result a trial reports just before raising its own exception
OWN_ERROR = "archsearch_own_error"


def trainable(spec: SearchSpec) -> Any:
    """The function Tune runs per trial, with the resources the space file asks for."""

    def archsearch_trial(config: dict[str, Any]) -> None:
        run_one_trial(spec, config)

    archsearch_trial.__name__ = TRIAL_FUNCTION
    return tune.with_resources(archsearch_trial, {"cpu": spec.cpu, "gpu": spec.gpu})


def run_one_trial(spec: SearchSpec, config: dict[str, Any]) -> None:
    """One trial inside a Tune worker; its own exception is marked, then raised (see above)."""
    try:
        _run_and_report(spec, config)
    except Exception as error:
        # NaN objectives: Tune requires them in every result; Optuna ignores results of
        # multi-objective trials before their end, and the error then ends this one
        marked = {OWN_ERROR: first_line(error), **dict.fromkeys(spec.objectives, math.nan)}
        tune.report({**marked, "node_id": ray.get_runtime_context().get_node_id()})
        raise


def _run_and_report(spec: SearchSpec, config: dict[str, Any]) -> None:
    """Run the trial, reporting after each gated epoch, then report its result with its files."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(spec.cpu)))
    trial_config = spec.trial_config(config)
    data = cached_data(trial_config)

    def report_epoch(record: dict[str, Any]) -> None:
        report = epoch_report(record, spec.objectives)
        if report is not None:
            tune.report(report)  # no checkpoint: an epoch report is never a result

    with trial_folder() as out:
        result = run_trial(trial_config, out_dir=out, data=data, on_epoch=report_epoch)
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


class RetryPolicy(tune.Callback):
    """On the driver: a trial whose own code raised is not retried (its marked result uses
    up its retries before its error arrives); a trial cut off by a lost node or worker runs
    again from its start, with one line saying so, and is counted in ``retried``."""

    def __init__(self, retries: int, emit: ProgressFn) -> None:
        self.retries = retries
        self.emit = emit
        self.retried = 0

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if OWN_ERROR in result:
            # Tune retries while failures (counted after this one) <= max_failures
            trial.max_failures = trial.num_failures

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.retried += 1
        self.emit(
            f"trial {trial.trial_id} was cut off ({_last_failure(trial_error_text(trial))}); "
            f"running it again from the start, retry {trial.num_failures} of {self.retries}"
        )


def _last_failure(text: str) -> str:
    """The newest failure of Tune's error file (``Failure # N (occurred at ...)`` blocks) as
    one short line: Ray's actor errors run to several sentences."""
    summary = short_error(text, limit=10_000)
    first = summary.split(". ")[0]
    return first if len(first) <= 160 else first[:157] + "..."
