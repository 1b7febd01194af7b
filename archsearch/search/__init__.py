"""The search: Ray Tune runs the trials, Optuna picks the next points, MLflow records them.

The only package that imports Ray (and Optuna's Ray integration); ``run_trial`` and the
tracker know nothing of either. Modules: ``run`` (the Tuner and Optuna wiring, ``run_search``),
``worker`` (the trial on a Ray worker, its data cache), ``reports`` (epoch reports and the
result told apart), ``searcher`` (OptunaSearch told of stopped trials and constraints),
``strata`` (a sampler per granularity or other stratum), ``moasha`` (the MOASHA scheduler),
``budget`` (the time budget), ``callbacks`` (every Tune callback: progress lines, MLflow
logging), ``resume`` (what ``--resume`` checks), ``cluster`` (the Ray session), ``auth``
(token authentication, settled before Ray loads).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from archsearch.search.auth import token_auth_if_available

# Ray reads RAY_AUTH_MODE once, when it loads: before any module of this package imports it.
token_auth_if_available()

# Loaded on first use: a Ray worker unpickling a trial imports ``worker`` (torch, Tune's
# report) and would otherwise pay for the driver's MLflow, Optuna and Tuner too.
_EXPORTS = {
    "ClusterError": "cluster",
    "ResumeError": "resume",
    "SearchOutcome": "run",
    "SearchProgress": "callbacks",
    "experiment_path": "run",
    "run_search": "run",
}

if TYPE_CHECKING:
    from archsearch.search.callbacks import SearchProgress
    from archsearch.search.cluster import ClusterError
    from archsearch.search.resume import ResumeError
    from archsearch.search.run import SearchOutcome, experiment_path, run_search


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


__all__ = [
    "ClusterError",
    "ResumeError",
    "SearchOutcome",
    "SearchProgress",
    "experiment_path",
    "run_search",
]
