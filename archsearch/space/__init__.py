"""The search space: what a search varies, read from a YAML file and checked before Ray starts.

``spec`` holds the types (``Param``, ``SearchSpec``) and the sampler names; ``schema`` reads a
file into a spec with one-line ``<file>: <key>: <what was expected>`` errors (``check`` is its
checker, ``params`` its ``space`` section, ``policy`` its ``scheduler``, ``time_budget`` and
``constraints``); ``preflight`` builds the model once to check it.
Imports neither Ray, MLflow nor Optuna.
"""

from archsearch.space.schema import load_spec, spec_from_dict
from archsearch.space.spec import SAMPLERS, SPACE_FIELDS, Param, SearchSpec, SpaceError

__all__ = [
    "SAMPLERS",
    "SPACE_FIELDS",
    "Param",
    "SearchSpec",
    "SpaceError",
    "load_spec",
    "spec_from_dict",
]
