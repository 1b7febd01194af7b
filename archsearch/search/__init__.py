"""The search: Ray Tune runs the trials, Optuna picks the next points, MLflow records them.

The only package that imports Ray (and Optuna's Ray integration); ``run_trial`` and the
tracker know nothing of either. Modules: ``run`` (the Tuner and Optuna wiring, ``run_search``),
``worker`` (the trial on a Ray worker, its data cache), ``reports`` (epoch reports and the
result told apart), ``searcher`` (OptunaSearch told of stopped trials and constraints),
``moasha`` (the MOASHA scheduler), ``budget`` (the time budget), ``callbacks`` (every Tune
callback: progress lines, MLflow logging), ``resume`` (what ``--resume`` checks), ``cluster``
(the Ray session), ``auth`` (token authentication, settled before Ray loads).
"""

from archsearch.search.auth import token_auth_if_available

# Ray reads RAY_AUTH_MODE once, when it loads: before the modules below import it.
token_auth_if_available()

from archsearch.search.callbacks import SearchProgress  # noqa: E402
from archsearch.search.cluster import ClusterError  # noqa: E402
from archsearch.search.resume import ResumeError  # noqa: E402
from archsearch.search.run import SearchOutcome, experiment_path, run_search  # noqa: E402

__all__ = [
    "ClusterError",
    "ResumeError",
    "SearchOutcome",
    "SearchProgress",
    "experiment_path",
    "run_search",
]
