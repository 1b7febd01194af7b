"""The ``space`` section of a search space file: what is searched, and when.

Each entry is a list of choices or a ``{uniform|loguniform|int: [lo, hi]}`` range, named
after a ``TrialConfig`` field (``SPACE_FIELDS``) or a gate's option (``<gate>.<option>``).
Every choice and both ends of every range are checked as a real setting would be, so no
trial fails hours later on a value the file could have been refused for.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from archsearch.config import TrialConfig
from archsearch.errors import ConfigError
from archsearch.gates import create_gate, get_gate_info, list_gates
from archsearch.space.check import Check, show
from archsearch.space.spec import INPUT_GATING_GRANULARITIES, RANGES, SPACE_FIELDS, Param


def read_params(
    raw: Any, train: dict[str, Any], base: TrialConfig, check: Check, section: str = "space"
) -> tuple[Param, ...]:
    """The searched parameters, those others depend on first (define-by-run draws them first).
    ``section``: where the file holds them, for error lines (``strata.<value>`` for one
    stratum's own ranges, read over the space's)."""
    if not isinstance(raw, dict) or not raw:
        check.fail(section, "expected a non-empty mapping of parameter: choices or range")
    if "gate" in raw and "gate_options" in train:
        check.fail(
            "train.gate_options", "the gate is searched; set options as space.<gate>.<option>"
        )
    built: dict[str, Param] = {}
    for name in sorted(raw, key=lambda n: n not in ("gate", "granularity")):
        key = f"{section}.{name}"
        if SPACE_FIELDS.get(name) in train:
            check.fail(key, f"also fixed as train.{SPACE_FIELDS[name]}; keep one of the two")
        kind, values = _distribution(raw[name], key, check)
        make = _field_param if name in SPACE_FIELDS else _gate_option_param
        built[name] = make(Param(name, kind, values), built, base, check, key)
    return tuple(built.values())


def _distribution(raw: Any, key: str, check: Check) -> tuple[str, tuple[Any, ...]]:
    expected = "a non-empty list of choices or one of {uniform|loguniform|int: [lo, hi]}"
    if isinstance(raw, list):
        return "choices", _choices(raw, key, expected, check)
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in RANGES:
        check.fail(key, f"expected {expected}, got {show(raw)}")
    kind, bounds = next(iter(raw.items()))
    return kind, _range(kind, bounds, f"{key}.{kind}", check)


def _choices(raw: list[Any], key: str, expected: str, check: Check) -> tuple[Any, ...]:
    if not raw:
        check.fail(key, f"expected {expected}, got an empty list")
    for value in raw:
        check.typed(value, key, bool | int | float | str | None)
    if len({(type(v), v) for v in raw}) != len(raw):
        check.fail(key, f"expected each choice once, got {raw}")
    return tuple(raw)


def _range(kind: str, bounds: Any, key: str, check: Check) -> tuple[Any, ...]:
    number = int if kind == "int" else float
    if not isinstance(bounds, list) or len(bounds) != 2:
        check.fail(key, f"expected [lo, hi], got {show(bounds)}")
    lo, hi = (check.typed(b, key, number) for b in bounds)
    if not all(math.isfinite(b) for b in bounds) or lo >= hi:
        check.fail(key, f"expected finite lo < hi, got [{lo}, {hi}]")
    if kind == "loguniform" and lo <= 0:
        check.fail(key, f"expected lo > 0 for a log scale, got {lo}")
    return (lo, hi)


def _field_param(
    param: Param, built: dict[str, Param], base: TrialConfig, check: Check, key: str
) -> Param:
    """A TrialConfig field: every choice (or both ends of a range) must be a valid setting."""
    for value in param.values:
        check.setting(base, SPACE_FIELDS[param.name], value, key)
    if param.name == "gate_inputs" and "granularity" in built:
        able = tuple(g for g in built["granularity"].values if g in INPUT_GATING_GRANULARITIES)
        return dataclasses.replace(param, when=("granularity", able))
    return param


def _gate_option_param(
    param: Param, built: dict[str, Param], base: TrialConfig, check: Check, key: str
) -> Param:
    """``<gate>.<option>``: sampled only in trials of that gate, so it must be one of them."""
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
