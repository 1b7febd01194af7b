"""archsearch in Python: build a search in code, run it, read its front, export a member.

The command line is one way in; this is the other, for notebooks and scripts. Each function
is a thin layer over what the commands call, so a search run from Python lands in the same
MLflow store and Ray state as ``archsearch search`` and is read back the same way::

    from archsearch import api

    spec = api.search_spec(
        "my-cnn", model=build_cnn, data="imagefolder", data_root="images",
        data_options={"image_size": 32}, init_weights="dense.safetensors",
        train={"epochs": 3}, space={"gate": ["hard_concrete"], "penalty.lambda": [0.1, 1.0]},
        trials=4,
    )
    outcome = api.run(spec)
    rows = api.front("my-cnn")
    api.export(rows[0]["run_id"], "onnx", "best.onnx")

``model`` and ``data`` are import paths (``"mynets:build_cnn"``) or the callables themselves.
A callable must be defined at the top level of a module, because every trial (a Ray worker,
perhaps on another machine) imports it again by name. One defined in the script being run
works too: it is imported as ``<script file stem>:<name>``, so the script must guard its
entry point with ``if __name__ == "__main__":`` (the import would run it again otherwise).

Importing this module loads neither Torch nor Ray; ``run`` and ``export`` do, when called.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsearch.errors import ConfigError

if TYPE_CHECKING:
    from archsearch.export import ExportReport
    from archsearch.search import SearchOutcome
    from archsearch.space import SearchSpec

__all__ = ["export", "front", "import_path_of", "reference", "run", "search_spec"]


def search_spec(
    name: str,
    *,
    model: str | Callable[..., Any],
    data: str | Callable[..., Any],
    space: dict[str, Any],
    data_root: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    val_fraction: float | None = None,
    model_options: dict[str, Any] | None = None,
    init_weights: str | Path | None = None,
    train: dict[str, Any] | None = None,
    trials: int = 16,
    concurrency: int = 2,
    sampler: str = "tpe",
    seed: int = 0,
    cpu: float = 1.0,
    gpu: float = 0.0,
    scheduler: dict[str, Any] | None = None,
    time_budget: str | float | None = None,
    constraints: dict[str, dict[str, float]] | None = None,
    objectives: list[str] | dict[str, str] | None = None,
    latency: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
    init_from: str | None = None,
) -> SearchSpec:
    """A search spec from keyword arguments: the same sections a space file holds (``space``
    is its ``space:`` mapping, ``train`` its ``train:`` one, ``scheduler`` e.g. ``{"name":
    "moasha", "grace_epochs": 1, "eta": 3}``, ``time_budget`` e.g. ``"30m"``, ``constraints``
    e.g. ``{"val_accuracy": {"min": 0.8}}``, ``objectives`` e.g. ``["val_accuracy",
    "latency"]``, ``latency`` e.g. ``{"runtime": "torch", "batch": 32}``, ``reference`` e.g.
    ``{"train": False}``, ``init_from`` ``"scratch"`` or ``"reference"``), checked exactly as
    a file is; every mistake is one ``SpaceError`` line naming the key. Relative
    ``data_root`` and ``init_weights`` are resolved against the working folder, as in a file."""
    from archsearch.space import spec_from_dict

    data_section = _data_section(data, data_root, data_options, val_fraction)
    raw: dict[str, Any] = {
        "name": name,
        "model": {"name": import_path_of(model, "model"), "options": dict(model_options or {})},
        "data": data_section,
        "space": space,
        "trials": trials,
        "concurrency": concurrency,
        "sampler": {"name": sampler, "seed": seed},
        "resources": {"cpu": cpu, "gpu": gpu},
        "train": dict(train or {}),
    }
    init = {"weights": str(init_weights)} if init_weights is not None else {}
    init.update({"from": init_from} if init_from is not None else {})
    optional = {
        "init": init or None,
        "reference": reference,
        **{"scheduler": scheduler, "time_budget": time_budget, "constraints": constraints},
        **{"objectives": objectives, "latency": latency},
    }
    raw.update({key: value for key, value in optional.items() if value is not None})
    return spec_from_dict(raw, source=f"search_spec({name!r})")


def _data_section(
    data: str | Callable[..., Any],
    root: str | Path | None,
    options: dict[str, Any] | None,
    val_fraction: float | None,
) -> dict[str, Any]:
    """A space file's ``data:`` section from ``search_spec``'s keywords."""
    section: dict[str, Any] = {"name": import_path_of(data, "data")}
    if root is not None:
        section["root"] = str(root)
    if options:
        section["options"] = dict(options)
    if val_fraction is not None:
        section["val_fraction"] = val_fraction
    return section


def run(spec: SearchSpec, **options: Any) -> SearchOutcome:
    """Run (or, with ``resume=True``, resume) the search to its end; the keywords are those
    of ``archsearch.search.run_search``: ``trials``, ``concurrency``, ``seed``, ``address``
    (a Ray cluster's HOST:PORT), ``tracking_uri``, ``storage``, ``resume``, ``time_budget``
    (seconds; default the spec's), ``on_progress`` (called with each progress line; default
    ``print``). The outcome counts ``stopped`` and ``infeasible`` trials and says whether the
    time budget ended the search (``budget_ended``)."""
    from archsearch.search import run_search

    return run_search(spec, **options)


def front(name: str, tracking_uri: str | None = None) -> list[dict[str, Any]]:
    """The Pareto front of the most recent search named ``name``, as the rows
    ``archsearch pareto --json`` prints (``run_id``, ``val_accuracy``, ``flops``, ...)."""
    from archsearch.pareto import sort_by_flops
    from archsearch.tracking import front_rows

    return sort_by_flops(front_rows(name, tracking_uri))


def reference(name: str, tracking_uri: str | None = None) -> dict[str, Any] | None:
    """The dense reference of the most recent search named ``name`` (``source``: ``trained``
    by the search or ``loaded`` from ``init.weights``; ``val_accuracy``, ``test_accuracy``,
    ``flops``, and ``params``, ``train_seconds`` where logged), or None when it has none."""
    from archsearch.tracking import search_reference

    return search_reference(name, tracking_uri)


def export(
    source: str, format: str, path: str | Path, tracking_uri: str | None = None
) -> ExportReport:
    """Write the subnetwork of ``source`` (an MLflow run id from ``front``, or a trial folder)
    as ``format`` (onnx, torchscript, pt2, safetensors) to ``path``, verified against the
    stored weights, as ``archsearch export`` does."""
    from archsearch.export import export_subnetwork

    return export_subnetwork(source, format, Path(path), tracking_uri=tracking_uri)


def import_path_of(target: str | Callable[..., Any], what: str) -> str:
    """``"module:qualname"`` for a callable that trials can import again by name; a string
    is taken as an import path or a bundled name as it is."""
    if isinstance(target, str):
        return target
    if not callable(target):
        raise ConfigError(f"{what}: expected a name, an import path or a callable, got {target!r}")
    qualname = getattr(target, "__qualname__", "")
    module = getattr(target, "__module__", None)
    if not module or not qualname or "<" in qualname:  # <lambda>, <locals>
        raise ConfigError(
            f"{what} {qualname or target!r}: define it with `def` at the top level of a module; "
            "trials import it again by name, which a lambda or nested function cannot be"
        )
    if module == "__main__":
        module = _script_module(qualname, what)
    return f"{module}:{qualname}"


def _script_module(qualname: str, what: str) -> str:
    """The running script as an importable module: its file stem, its folder on the path."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if not main_file:
        raise ConfigError(
            f"{what} {qualname!r} is defined in an interactive session or notebook; move it "
            "into a .py module next to it and import it from there"
        )
    script = Path(main_file).resolve()
    if str(script.parent) not in sys.path:
        sys.path.insert(0, str(script.parent))
    return script.stem
