"""The search space file: its YAML, its sections and their keys, read into a ``SearchSpec``.

A search can run for hours on a cluster, so every mistake a file can hold (an unknown key, a
wrong type, an empty choice list, a range with lo >= hi, a granularity the model lacks) is
caught here, before Ray starts, and reported as one line: ``<file>: <key>: <what was
expected>``. The fixed settings become a ``TrialConfig`` right away, so its own checks run on
them; the ``space`` section is read by ``params.py``, the model checked by ``preflight.py``.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from archsearch.config import TrialConfig
from archsearch.data import get_dataset_info
from archsearch.errors import ConfigError, first_line
from archsearch.pareto import OBJECTIVE_CHOICES, OBJECTIVES
from archsearch.space.check import Check
from archsearch.space.params import read_params
from archsearch.space.policy import read_constraints, read_scheduler, read_time_budget
from archsearch.space.preflight import check_model
from archsearch.space.spec import INIT_FROM, SAMPLERS, SPACE_FIELDS, STARTS, Param, SearchSpec

#: TrialConfig fields that come from the model and data sections, not from ``train``
_SECTION_FIELDS = (
    "model",
    "model_options",
    "init_weights",
    "data",
    "data_root",
    "data_options",
    "val_fraction",
    "latency_runtime",
    "latency_batch",
    "latency_repeats",
    "latency_threads",
)

_TOP_LEVEL: dict[str, Any] = {
    "name": str,
    "model": dict,
    "data": dict,
    "init": dict,
    "objectives": dict | list,
    "trials": int,
    "concurrency": int,
    "retries": int,
    "sampler": dict,
    "resources": dict,
    "train": dict,
    "space": dict,
    "scheduler": dict,
    "time_budget": str | float,
    "constraints": dict,
    "latency": dict,
    "reference": dict,
    "strata": dict,
}
_REQUIRED = ("name", "model", "data", "space")
_MODEL_KEYS = {"name": str, "options": dict}
_INIT_KEYS = {"weights": str, "from": str}
_REFERENCE_KEYS = {"train": bool}
_DATA_KEYS = {"name": str, "root": str | None, "val_fraction": float, "options": dict}
_SAMPLER_KEYS = {"name": str, "seed": int, "stratify": str, "start": str, "multivariate": bool}
_LATENCY_KEYS = {"runtime": str | bool, "batch": int, "repeats": int, "threads": int}
_RESOURCE_KEYS = {"cpu": float, "gpu": float}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def load_spec(path: str | Path) -> SearchSpec:
    """Read and validate a search space file; any problem is a one-line SpaceError."""
    check = Check(str(path))
    raw = _read_yaml(Path(path), check)
    return _build(raw, check)


def spec_from_dict(raw: dict[str, Any], source: str = "<python>") -> SearchSpec:
    """A spec from the same mapping a space file holds, built in code (notebooks, scripts);
    checked exactly as a file is, errors naming ``source`` instead of a file."""
    check = Check(source)
    if not isinstance(raw, dict):
        check.fail("(spec)", "expected a mapping with keys name, model, data, space, ...")
    return _build(raw, check)


# -- reading ------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string (it wants ``1.0e-3``); search spaces are full of
    such numbers, so this loader also reads exponent-only floats as floats."""


# A copy, not the shared dict: adding to SafeLoader's own lists would change it for everyone.
_Loader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_yaml(path: Path, check: Check) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        check.fail("(file)", f"cannot read it: {error.strerror or error}")
    except UnicodeDecodeError as error:
        check.fail("(file)", f"not a text file (byte {error.start} is not UTF-8); expected YAML")
    if "\0" in text:
        check.fail("(file)", "not a text file (it holds NUL bytes); expected YAML")
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        check.fail(where, f"not valid YAML: {getattr(error, 'problem', None) or first_line(error)}")
    if not isinstance(raw, dict):
        check.fail("(file)", "expected a mapping with keys name, model, data, space, ...")
    return raw


# -- building -----------------------------------------------------------------------------


def _build(raw: dict[str, Any], check: Check) -> SearchSpec:
    check.mapping(raw, "", _TOP_LEVEL, _REQUIRED)
    if not _NAME.match(raw["name"]):
        check.fail("name", "expected letters, digits, '.', '_' or '-' (it names folders)")
    sampler = check.mapping(raw.get("sampler", {}), "sampler", _SAMPLER_KEYS)
    resources = check.mapping(raw.get("resources", {}), "resources", _RESOURCE_KEYS)
    train = check.mapping(raw.get("train", {}), "train", _train_fields())
    base = _base_config(raw, train, check)
    spec = SearchSpec(
        name=raw["name"],
        source=check.file,
        base=base,
        params=read_params(raw["space"], train, base, check),
        objectives=_objectives(raw.get("objectives", OBJECTIVES), check),
        trials=raw.get("trials", 16),
        concurrency=raw.get("concurrency", 2),
        sampler=sampler.get("name", "tpe"),
        seed=sampler.get("seed", 0),
        cpu=float(resources.get("cpu", 1.0)),
        gpu=float(resources.get("gpu", 0.0)),
        retries=raw.get("retries", 2),
        scheduler=read_scheduler(raw.get("scheduler", {}), base, check),
        time_budget=read_time_budget(raw.get("time_budget"), check),
        constraints=read_constraints(raw.get("constraints", {}), check),
        **_reference_settings(raw, base, check),
        stratify=sampler.get("stratify"),
        start=sampler.get("start", "random"),
        multivariate=sampler.get("multivariate", False),
    )
    _check_run_shape(spec, check)
    _check_strata(spec, check)
    spec = dataclasses.replace(spec, stratum_params=_stratum_params(raw, train, spec, check))
    _check_teacher(spec, check)
    if "latency" in spec.objectives and base.latency_runtime == "off":
        check.fail("latency.runtime", "off, but latency is an objective: use onnxruntime or torch")
    # last: building a model is the slow check; what it finds is the pre-flight report
    return dataclasses.replace(spec, preflight=check_model(base, spec.params, check))


def _check_teacher(spec: SearchSpec, check: Check) -> None:
    """Distillation learns from the dense network the trials start from: there is none
    when they start from scratch."""
    searched = next((p for p in spec.params if p.name == "distill_weight"), None)
    distils = spec.base.distill_weight > 0 or searched is not None
    if distils and spec.init_from == "scratch" and spec.base.init_weights is None:
        where = "space.distill_weight" if searched is not None else "train.distill_weight"
        check.fail(
            where,
            "distils the trained dense network a trial starts from, but the trials start from "
            "scratch: use init: {from: reference} (the default when the search trains its "
            "reference) or init.weights",
        )


def _check_run_shape(spec: SearchSpec, check: Check) -> None:
    for key in ("trials", "concurrency"):
        if getattr(spec, key) < 1:
            check.fail(key, f"expected an integer >= 1, got {getattr(spec, key)}")
    if spec.retries < 0:
        check.fail("retries", f"expected an integer >= 0, got {spec.retries}")
    if spec.sampler not in SAMPLERS:
        check.fail("sampler.name", f"expected one of: {', '.join(SAMPLERS)}")
    if spec.start not in STARTS:
        check.fail("sampler.start", f"expected one of: {', '.join(STARTS)}, got {spec.start!r}")
    if spec.multivariate and spec.sampler != "tpe":
        check.fail(
            "sampler.multivariate", f"only tpe models parameters jointly, not {spec.sampler}"
        )
    if spec.cpu <= 0:
        check.fail("resources.cpu", f"expected a number > 0 (fractions allowed), got {spec.cpu}")
    if spec.gpu < 0 or (spec.gpu > 1 and not spec.gpu.is_integer()):
        check.fail(
            "resources.gpu", f"expected 0, a fraction up to 1 or a whole number, got {spec.gpu}"
        )


def _check_strata(spec: SearchSpec, check: Check) -> None:
    """``sampler.stratify`` names a searched list of choices that sets a trial setting."""
    if spec.stratify is None:
        return
    param = spec.param(spec.stratify)
    if param is None or param.kind != "choices" or param.name not in SPACE_FIELDS:
        choices = [p.name for p in spec.params if p.kind == "choices" and p.name in SPACE_FIELDS]
        known = ", ".join(choices) or "none in this space"
        check.fail(
            "sampler.stratify",
            f"expected a searched parameter with a list of choices ({known}), "
            f"got {spec.stratify!r}",
        )
    if param.when is not None:
        key, values = param.when
        check.fail(
            "sampler.stratify",
            f"{param.name!r} is drawn only when {key} is one of {list(values)}; expected a "
            "parameter every trial draws",
        )


def _stratum_params(
    raw: dict[str, Any], train: dict[str, Any], spec: SearchSpec, check: Check
) -> tuple[tuple[Any, tuple[Param, ...]], ...]:
    """``strata: {<value>: {<parameter>: choices or range}}``: a stratum's own ranges for
    parameters the space searches. Why: a structured stratum's useful shapes can sit in a
    narrower part of a range than the weight-sparse ones (on LeNet-5-Caffe lambda 0.58-0.99
    kept 30-47% of the FLOPs on channels), and one shared range spends its draws there; each
    entry is checked as the space's own, in its stratum."""
    section = raw.get("strata")
    if section is None:
        return ()
    if spec.stratify is None:
        check.fail(
            "strata",
            "needs sampler.stratify: it gives one sampler's stratum its own ranges "
            "(e.g. sampler: {stratify: granularity})",
        )
    if not section:
        check.fail("strata", "expected a mapping of <stratum>: {parameter: choices or range}")
    values = spec.strata()
    searched = [p.name for p in spec.params if p.name != spec.stratify]
    read = []
    for value, entries in section.items():
        key = f"strata.{value}"
        if value not in values:
            known = list(values)
            check.fail(key, f"not a value of {spec.stratify} in space; expected one of {known}")
        if not isinstance(entries, dict) or not entries:
            check.fail(key, "expected a non-empty mapping of parameter: choices or range")
        for name in entries:
            if name == spec.stratify:
                check.fail(f"{key}.{name}", f"fixed at {value!r} in this stratum; it cannot vary")
            if name not in searched:
                check.fail(
                    f"{key}.{name}",
                    "not searched in space; a stratum gives its own choices or range to one of: "
                    + ", ".join(searched),
                )
        stratum = dataclasses.replace(spec.base, **{SPACE_FIELDS[spec.stratify]: value})
        params = read_params({**raw["space"], **entries}, train, stratum, check, key)
        read.append((value, tuple(p for p in params if p.name in entries)))
    return tuple(read)


def _objectives(raw: Any, check: Check) -> dict[str, str]:
    """``[val_accuracy, latency]`` or ``{val_accuracy: max, latency: min}``: accuracy and one
    or two costs, each in its only sensible direction."""
    names = list(raw)
    costs = ", ".join(k for k in OBJECTIVE_CHOICES if k != "val_accuracy")
    for name in names:
        if not isinstance(name, str) or name not in OBJECTIVE_CHOICES:
            check.fail(f"objectives.{name}", f"expected val_accuracy and one or two of {costs}")
        direction = raw[name] if isinstance(raw, dict) else OBJECTIVE_CHOICES[name]
        if direction != OBJECTIVE_CHOICES[name]:
            check.fail(
                f"objectives.{name}",
                f"expected {OBJECTIVE_CHOICES[name]} (accuracy is maximised, costs minimised)",
            )
    if "val_accuracy" not in names or not 2 <= len(set(names)) == len(names) <= 3:
        check.fail("objectives", f"expected val_accuracy and one or two of {costs}, once each")
    # accuracy first, the costs in the file's order: one spelling of a search's objectives
    return {name: OBJECTIVE_CHOICES[name] for name in sorted(names, key="val_accuracy".__ne__)}


def _base_config(raw: dict[str, Any], train: dict[str, Any], check: Check) -> TrialConfig:
    """The fixed settings of every trial; each one checked by TrialConfig on its own."""
    model = check.mapping(raw["model"], "model", _MODEL_KEYS, ("name",))
    data = _data_section(raw["data"], check)
    init = check.mapping(raw.get("init", {}), "init", _INIT_KEYS)
    base = TrialConfig(
        model=model["name"],
        model_options=model.get("options", {}),
        init_weights=_absolute(init.get("weights")),
        data=data["name"],
        data_root=_absolute(data.get("root")),
        data_options=data.get("options", {}),
    )
    val_fraction = data.get("val_fraction", 0.1)
    base = check.setting(base, "val_fraction", val_fraction, "data.val_fraction")
    for key, value in train.items():
        base = check.setting(base, key, value, f"train.{key}")
    latency = dict(check.mapping(raw.get("latency", {}), "latency", _LATENCY_KEYS))
    if latency.get("runtime") is False:  # YAML 1.1 reads an unquoted ``off`` as false
        latency["runtime"] = "off"
    for key, value in latency.items():
        base = check.setting(base, f"latency_{key}", value, f"latency.{key}")
    return base


def _reference_settings(raw: dict[str, Any], base: TrialConfig, check: Check) -> dict[str, Any]:
    """``reference: {train: false}`` and ``init: {from: reference}``. The trials can start
    from the reference only when the search trains one; with ``init.weights`` they already
    start from the loaded network (which is the reference then). Unset, ``init.from`` is
    ``reference`` wherever the search trains one, else ``scratch``: trials from the trained
    dense network ended 1-2 points above the same trials from scratch at every FLOPs level
    (benchmarks/RESULTS.md, "Trials from the dense reference")."""
    train = check.mapping(raw.get("reference", {}), "reference", _REFERENCE_KEYS).get("train")
    start = raw.get("init", {}).get("from")
    if start is None:
        trains = train is not False and base.init_weights is None
        start = "reference" if trains else "scratch"
        return {"reference_train": train is not False, "init_from": start}
    if start not in INIT_FROM:
        check.fail("init.from", f"expected {' or '.join(INIT_FROM)}, got {start!r}")
    if start == "reference" and base.init_weights is not None:
        check.fail(
            "init.from",
            "reference, but init.weights is given: the trials start from those weights (the "
            "search's reference then); keep one of the two",
        )
    if start == "reference" and train is False:
        check.fail(
            "init.from", "reference needs the dense reference trained: remove reference.train"
        )
    return {"reference_train": train is not False, "init_from": start}


def _train_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(TrialConfig)
    return {k: v for k, v in hints.items() if k not in _SECTION_FIELDS}


def _absolute(root: str | None) -> str | None:
    """Trials run in their own working folders, so a relative path is resolved here, once."""
    return str(Path(root).expanduser().resolve()) if root is not None else None


def _data_section(raw: Any, check: Check) -> dict[str, Any]:
    """The data section with every data set option under ``options``: they may be given there
    or directly in ``data:`` (``data: {name: imagefolder, root: DIR, image_size: 32}``)."""
    known = {k: v for k, v in raw.items() if k in _DATA_KEYS} if isinstance(raw, dict) else raw
    data = check.mapping(known, "data", _DATA_KEYS, ("name",))
    try:
        info = get_dataset_info(data["name"])
    except ConfigError as error:  # an unknown name, or the user's module does not import
        check.fail("data.name", str(error))
    allowed = info.option_defaults()
    options = dict(data.get("options", {}))
    for key in options:
        if key not in allowed and not info.open_options:
            check.fail(
                f"data.options.{key}", f"unknown option; expected one of: {', '.join(allowed)}"
            )
    for key in [k for k in raw if k not in known]:
        if key not in allowed and not info.open_options:
            check.fail(
                f"data.{key}",
                f"unknown key; expected one of: {', '.join(_DATA_KEYS)} or an option of "
                f"{data['name']!r}: {', '.join(allowed) or '(none)'}",
            )
        if key in options:
            check.fail(f"data.{key}", "given twice: here and under data.options")
        options[key] = raw[key]
    return {**data, "options": options}
