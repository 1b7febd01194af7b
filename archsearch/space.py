"""The search space file: what a search varies, validated once, when it is loaded.

A search can run for hours on a cluster, so every mistake a file can hold (an unknown key, a
wrong type, an empty choice list, a range with lo >= hi, a granularity the model lacks) is
caught here, before Ray starts, and reported as one line: ``<file>: <key>: <what was
expected>``. The fixed settings become a ``TrialConfig`` right away, so its own checks run on
them; every choice and range end of the space is checked the same way.

Sampling is define-by-run (``SearchSpec.sample`` calls ``trial.suggest_*``), so a gate's
options are sampled only in trials that use that gate and the optimiser never models a
parameter that had no effect. This module knows the suggest methods by name only: Optuna
itself stays at the edge, in ``search.py``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from archsearch.config import TrialConfig
from archsearch.data import get_dataset_info, load_dataset
from archsearch.errors import ConfigError, UnknownNameError
from archsearch.gates import create_gate, get_gate_info, list_gates
from archsearch.models import create_model
from archsearch.pruning.groups import find_groups


class SpaceError(ConfigError):
    """A search space file that cannot be searched; the message names the file and the key."""


SAMPLERS: tuple[str, ...] = ("tpe", "nsga2", "random")

#: the two objectives the search optimises, with their only sensible direction
OBJECTIVES: dict[str, str] = {"val_accuracy": "max", "flops": "min"}

#: space parameters that set one TrialConfig field (``<gate>.<option>`` set gate options)
SPACE_FIELDS: dict[str, str] = {
    "gate": "gate",
    "granularity": "granularity",
    "gate_inputs": "gate_inputs",
    "penalty.lambda": "penalty_lambda",
    "penalty.cost": "penalty_cost",
    "penalty.target": "penalty_target",
    "lr": "lr",
    "gate_lr": "gate_lr",
}

#: TrialConfig fields that come from the model and data sections, not from ``train``
_SECTION_FIELDS = ("model", "model_options", "data", "data_root", "data_options", "val_fraction")

#: granularities that gate neurons, the only ones input gating applies to
_INPUT_GATING_GRANULARITIES = ("neuron", "channel+neuron")

#: (input shape, classes) per data set, so validation builds the model without loading data
_DATA_GEOMETRY: dict[str, Callable[[dict[str, Any]], tuple[tuple[int, ...], int]]] = {
    "digits": lambda _o: ((1, 8, 8), 10),
    "mnist": lambda _o: ((1, 28, 28), 10),
    "fashion_mnist": lambda _o: ((1, 28, 28), 10),
    "cifar10": lambda _o: ((3, 32, 32), 10),
    "synthetic": lambda o: (tuple(o["input_shape"]), o["num_classes"]),
}

_TOP_LEVEL: dict[str, Any] = {
    "name": str,
    "model": dict,
    "data": dict,
    "objectives": dict,
    "trials": int,
    "concurrency": int,
    "sampler": dict,
    "resources": dict,
    "train": dict,
    "space": dict,
}
_REQUIRED = ("name", "model", "data", "space")
_MODEL_KEYS = {"name": str, "options": dict}
_DATA_KEYS = {"name": str, "root": str | None, "val_fraction": float, "options": dict}
_SAMPLER_KEYS = {"name": str, "seed": int}
_RESOURCE_KEYS = {"cpu": float, "gpu": float}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

_TYPE_WORDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "a mapping",
    list: "a list",
    type(None): "null",
}

#: how each kind of space entry asks the optimiser for a value
_SUGGEST: dict[str, Callable[[Any, str, tuple[Any, ...]], Any]] = {
    "choices": lambda trial, name, v: trial.suggest_categorical(name, list(v)),
    "uniform": lambda trial, name, v: trial.suggest_float(name, v[0], v[1]),
    "loguniform": lambda trial, name, v: trial.suggest_float(name, v[0], v[1], log=True),
    "int": lambda trial, name, v: trial.suggest_int(name, v[0], v[1]),
}
_RANGES = ("uniform", "loguniform", "int")


@dataclass(frozen=True)
class Param:
    """One searched parameter: choices or a range, optionally only sampled when it applies."""

    name: str
    kind: str  # "choices" or one of _RANGES
    values: tuple[Any, ...]  # the choices, or (lo, hi)
    #: (parameter, values): sampled only when that parameter took one of those values
    when: tuple[str, tuple[Any, ...]] | None = None

    def suggest(self, trial: Any) -> Any:
        return _SUGGEST[self.kind](trial, self.name, self.values)

    def applies(self, point: dict[str, Any], base: TrialConfig) -> bool:
        if self.when is None:
            return True
        key, values = self.when
        current = point[key] if key in point else getattr(base, SPACE_FIELDS[key])
        return current in values

    def describe(self) -> str:
        text = list(self.values) if self.kind == "choices" else f"{self.kind}{list(self.values)}"
        if self.when is not None:
            text = f"{text} when {self.when[0]} in {list(self.when[1])}"
        return str(text)


@dataclass(frozen=True)
class SearchSpec:
    """A validated search space file: fixed trial settings, searched parameters, run shape."""

    name: str
    source: str
    #: the fixed settings of every trial; sampled values replace some of them
    base: TrialConfig
    params: tuple[Param, ...]
    objectives: dict[str, str] = field(default_factory=lambda: dict(OBJECTIVES))
    trials: int = 16
    concurrency: int = 2
    sampler: str = "tpe"
    seed: int = 0
    cpu: float = 1.0
    gpu: float = 0.0

    def sample(self, trial: Any) -> dict[str, Any]:
        """Define-by-run space for Optuna: conditions are read from values already drawn."""
        point: dict[str, Any] = {}
        for param in self.params:
            if param.applies(point, self.base):
                point[param.name] = param.suggest(trial)
        return point

    def trial_config(self, sampled: dict[str, Any]) -> TrialConfig:
        """The fixed settings with a sampled point laid over them."""
        fields = {SPACE_FIELDS[k]: v for k, v in sampled.items() if k in SPACE_FIELDS}
        gate = fields.get("gate", self.base.gate)
        options = dict(self.base.gate_options) if gate == self.base.gate else {}
        for key, value in sampled.items():
            owner, _, option = key.partition(".")
            if key not in SPACE_FIELDS and owner == gate:
                options[option] = value
            elif key not in SPACE_FIELDS and owner not in list_gates():
                raise ConfigError(f"sampled parameter {key!r} is not in the space of {self.source}")
        return dataclasses.replace(self.base, **fields, gate_options=options)

    def describe(self) -> dict[str, Any]:
        """Flat settings for the search's parent run, so a run records what was searched."""
        searched = {SPACE_FIELDS.get(p.name) for p in self.params}
        fixed = {k: v for k, v in self.base.to_dict().items() if k not in searched}
        return {
            "space_file": self.source,
            "trials": self.trials,
            "concurrency": self.concurrency,
            "sampler": self.sampler,
            "sampler.seed": self.seed,
            "resources.cpu": self.cpu,
            "resources.gpu": self.gpu,
            **{f"fixed.{k}": v for k, v in fixed.items()},
            **{f"space.{p.name}": p.describe() for p in self.params},
        }


def load_spec(path: str | Path) -> SearchSpec:
    """Read and validate a search space file; any problem is a one-line SpaceError."""
    check = _Check(str(path))
    raw = _read_yaml(Path(path), check)
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


def _read_yaml(path: Path, check: _Check) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        check.fail("(file)", f"cannot read it: {error.strerror or error}")
    try:
        raw = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        check.fail(where, f"not valid YAML: {getattr(error, 'problem', None) or error}")
    if not isinstance(raw, dict):
        check.fail("(file)", "expected a mapping with keys name, model, data, space, ...")
    return raw


class _Check:
    """Type and key checks that fail with the file's name and the key's dotted path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> NoReturn:
        raise SpaceError(f"{self.file}: {key}: {message}")

    def mapping(
        self, raw: Any, key: str, fields: dict[str, Any], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """``raw`` as a mapping holding only ``fields``, each of its declared type."""
        if not isinstance(raw, dict):
            self.fail(key, f"expected a mapping, got {_show(raw)}")
        for name in raw:
            if name not in fields:
                known = ", ".join(map(str, fields))
                self.fail(_join(key, name), f"unknown key; expected one of: {known}")
            self.typed(raw[name], _join(key, name), fields[name])
        for name in required:
            if name not in raw:
                self.fail(_join(key, name), "missing; it is required")
        return raw

    def typed(self, value: Any, key: str, hint: Any) -> Any:
        if not _matches(value, hint):
            self.fail(key, f"expected {_hint_words(hint)}, got {_show(value)}")
        return value


def _join(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


def _show(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if value is not None else "nothing (null)"


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is Any:
        return True
    if origin is not None:
        return isinstance(value, origin)
    if hint is float:  # ints are numbers too; bools are not
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _hint_words(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_hint_words(arg) for arg in typing.get_args(hint))
    return _TYPE_WORDS.get(typing.get_origin(hint) or hint, str(hint))


# -- building -----------------------------------------------------------------------------


def _build(raw: dict[str, Any], check: _Check) -> SearchSpec:
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
        params=_params(raw["space"], train, base, check),
        objectives=_objectives(raw.get("objectives", OBJECTIVES), check),
        trials=raw.get("trials", 16),
        concurrency=raw.get("concurrency", 2),
        sampler=sampler.get("name", "tpe"),
        seed=sampler.get("seed", 0),
        cpu=float(resources.get("cpu", 1.0)),
        gpu=float(resources.get("gpu", 0.0)),
    )
    _check_run_shape(spec, check)
    _check_model(base, spec.params, check)  # last: building a model is the slow check
    return spec


def _check_run_shape(spec: SearchSpec, check: _Check) -> None:
    for key in ("trials", "concurrency"):
        if getattr(spec, key) < 1:
            check.fail(key, f"expected an integer >= 1, got {getattr(spec, key)}")
    if spec.sampler not in SAMPLERS:
        check.fail("sampler.name", f"expected one of: {', '.join(SAMPLERS)}")
    if spec.cpu <= 0:
        check.fail("resources.cpu", f"expected a number > 0 (fractions allowed), got {spec.cpu}")
    if spec.gpu < 0 or (spec.gpu > 1 and not spec.gpu.is_integer()):
        check.fail(
            "resources.gpu", f"expected 0, a fraction up to 1 or a whole number, got {spec.gpu}"
        )


def _objectives(raw: Any, check: _Check) -> dict[str, str]:
    check.mapping(raw, "objectives", dict.fromkeys(OBJECTIVES, str))
    for metric, direction in OBJECTIVES.items():
        if raw.get(metric) != direction:
            check.fail(
                f"objectives.{metric}",
                f"expected {direction} (the search optimises val_accuracy: max and flops: min)",
            )
    return dict(raw)


def _base_config(raw: dict[str, Any], train: dict[str, Any], check: _Check) -> TrialConfig:
    """The fixed settings of every trial; each one checked by TrialConfig on its own."""
    model = check.mapping(raw["model"], "model", _MODEL_KEYS, ("name",))
    data = check.mapping(raw["data"], "data", _DATA_KEYS, ("name",))
    _check_data(data, check)
    values: dict[str, Any] = {
        "model": model["name"],
        "model_options": model.get("options", {}),
        "data": data["name"],
        "data_root": _absolute(data.get("root")),
        "data_options": data.get("options", {}),
    }
    base = _with(
        TrialConfig(**values), "val_fraction", data.get("val_fraction", 0.1), "data", check
    )
    for key, value in train.items():
        base = _with(base, key, value, "train", check)
    return base


def _train_fields() -> dict[str, Any]:
    hints = typing.get_type_hints(TrialConfig)
    return {k: v for k, v in hints.items() if k not in _SECTION_FIELDS}


def _with(
    base: TrialConfig, field_name: str, value: Any, section: str, check: _Check, key: str = ""
) -> TrialConfig:
    """``base`` with one field changed, checked by TrialConfig; errors name ``key``."""
    where = key or _join(section, field_name)
    check.typed(value, where, typing.get_type_hints(TrialConfig)[field_name])
    try:
        return dataclasses.replace(base, **{field_name: value})
    except ConfigError as error:
        check.fail(where, str(error))


def _absolute(root: str | None) -> str | None:
    """Trials run in their own working folders, so a relative root is resolved here, once."""
    return str(Path(root).expanduser().resolve()) if root is not None else None


def _check_data(data: dict[str, Any], check: _Check) -> None:
    try:
        info = get_dataset_info(data["name"])
    except UnknownNameError as error:
        check.fail("data.name", str(error))
    allowed = info.option_defaults()
    for key in data.get("options", {}):
        if key not in allowed:
            check.fail(
                f"data.options.{key}", f"unknown option; expected one of: {', '.join(allowed)}"
            )


# -- the space ----------------------------------------------------------------------------


def _params(raw: Any, train: dict[str, Any], base: TrialConfig, check: _Check) -> tuple[Param, ...]:
    if not isinstance(raw, dict) or not raw:
        check.fail("space", "expected a non-empty mapping of parameter: choices or range")
    if "gate" in raw and "gate_options" in train:
        check.fail(
            "train.gate_options", "the gate is searched; set options as space.<gate>.<option>"
        )
    # Parameters others depend on come first, so define-by-run has drawn them already.
    built: dict[str, Param] = {}
    for name in sorted(raw, key=lambda n: n not in ("gate", "granularity")):
        key = f"space.{name}"
        if SPACE_FIELDS.get(name) in train:
            check.fail(key, f"also fixed as train.{SPACE_FIELDS[name]}; keep one of the two")
        kind, values = _distribution(raw[name], key, check)
        make = _field_param if name in SPACE_FIELDS else _gate_option_param
        built[name] = make(Param(name, kind, values), built, base, check)
    return tuple(built.values())


def _distribution(raw: Any, key: str, check: _Check) -> tuple[str, tuple[Any, ...]]:
    expected = "a non-empty list of choices or one of {uniform|loguniform|int: [lo, hi]}"
    if isinstance(raw, list):
        return "choices", _choices(raw, key, expected, check)
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in _RANGES:
        check.fail(key, f"expected {expected}, got {_show(raw)}")
    kind, bounds = next(iter(raw.items()))
    return kind, _range(kind, bounds, f"{key}.{kind}", check)


def _choices(raw: list[Any], key: str, expected: str, check: _Check) -> tuple[Any, ...]:
    if not raw:
        check.fail(key, f"expected {expected}, got an empty list")
    for value in raw:
        check.typed(value, key, bool | int | float | str | None)
    if len({(type(v), v) for v in raw}) != len(raw):
        check.fail(key, f"expected each choice once, got {raw}")
    return tuple(raw)


def _range(kind: str, bounds: Any, key: str, check: _Check) -> tuple[Any, ...]:
    number = int if kind == "int" else float
    if not isinstance(bounds, list) or len(bounds) != 2:
        check.fail(key, f"expected [lo, hi], got {_show(bounds)}")
    lo, hi = (check.typed(b, key, number) for b in bounds)
    if not all(math.isfinite(b) for b in bounds) or lo >= hi:
        check.fail(key, f"expected finite lo < hi, got [{lo}, {hi}]")
    if kind == "loguniform" and lo <= 0:
        check.fail(key, f"expected lo > 0 for a log scale, got {lo}")
    return (lo, hi)


def _field_param(param: Param, built: dict[str, Param], base: TrialConfig, check: _Check) -> Param:
    """A TrialConfig field: every choice (or both ends of a range) must be a valid setting."""
    for value in param.values:
        _with(base, SPACE_FIELDS[param.name], value, "space", check, key=f"space.{param.name}")
    if param.name == "gate_inputs" and "granularity" in built:
        able = tuple(g for g in built["granularity"].values if g in _INPUT_GATING_GRANULARITIES)
        return dataclasses.replace(param, when=("granularity", able))
    return param


def _gate_option_param(
    param: Param, built: dict[str, Param], base: TrialConfig, check: _Check
) -> Param:
    """``<gate>.<option>``: sampled only in trials of that gate, so it must be one of them."""
    key = f"space.{param.name}"
    gate, _, option = param.name.partition(".")
    if gate not in list_gates() or not option:
        known = ", ".join(SPACE_FIELDS)
        check.fail(key, f"unknown parameter; expected one of: {known}, or <gate>.<option>")
    gates = built["gate"].values if "gate" in built else (base.gate,)
    if gate not in gates:
        check.fail(key, f"gate {gate!r} is not among the gates searched: {', '.join(gates)}")
    defaults = get_gate_info(gate).option_defaults()
    if option not in defaults:
        check.fail(key, f"gate {gate!r} has no option {option!r}; it has: {', '.join(defaults)}")
    for value in param.values:
        check.typed(value, key, _option_type(defaults[option]))
        try:
            create_gate(gate, 2, **{option: value})
        except ConfigError as error:
            check.fail(key, str(error))
    return dataclasses.replace(param, when=("gate", (gate,)) if "gate" in built else None)


def _option_type(default: Any) -> Any:
    return float if isinstance(default, float) else type(default)


# -- the model ----------------------------------------------------------------------------


def _check_model(base: TrialConfig, params: tuple[Param, ...], check: _Check) -> None:
    """Build the model once and find its groups at every granularity the space may pick."""
    shape, classes = _data_geometry(base)
    try:
        model = create_model(base.model, shape, classes, **base.model_options)
    except UnknownNameError as error:
        check.fail("model.name", str(error))
    except ConfigError as error:
        check.fail("model.options", str(error))
    searched = {p.name: p for p in params}
    granularities, gran_key = _values_of("granularity", searched, base)
    inputs, inputs_key = _values_of("gate_inputs", searched, base)
    for granularity in granularities:
        _groups(model, shape, granularity, False, gran_key, check)
    if True not in inputs:
        return
    able = [g for g in granularities if g in _INPUT_GATING_GRANULARITIES]
    if not able or ("gate_inputs" not in searched and len(able) < len(granularities)):
        check.fail(inputs_key, "true needs granularity neuron or channel+neuron in every trial")
    for granularity in able:
        _groups(model, shape, granularity, True, inputs_key, check)


def _values_of(
    name: str, searched: dict[str, Param], base: TrialConfig
) -> tuple[tuple[Any, ...], str]:
    if name in searched:
        return searched[name].values, f"space.{name}"
    return (getattr(base, SPACE_FIELDS[name]),), f"train.{SPACE_FIELDS[name]}"


def _groups(
    model: Any, shape: tuple[int, ...], granularity: str, inputs: bool, key: str, check: _Check
) -> None:
    try:
        find_groups(model, shape, granularity, gate_inputs=inputs)
    except ConfigError as error:
        check.fail(key, str(error))


def _data_geometry(base: TrialConfig) -> tuple[tuple[int, ...], int]:
    """Known data sets by table; any other is loaded once (slower, but always right)."""
    if base.data in _DATA_GEOMETRY:
        options = {**get_dataset_info(base.data).option_defaults(), **base.data_options}
        return _DATA_GEOMETRY[base.data](options)
    splits = load_dataset(
        base.data, root=base.data_root, val_fraction=base.val_fraction, **base.data_options
    )
    return splits.input_shape, splits.num_classes
