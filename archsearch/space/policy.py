"""How a search spends its budget: the space file's ``scheduler``, ``time_budget`` and
``constraints`` sections, each checked into one-line ``<file>: <key>: <expected>`` errors.

```yaml
scheduler: {name: moasha, grace_epochs: 1, eta: 3}   # default: {name: fifo}
time_budget: 30m                                      # s, m or h; a bare number is seconds
constraints: {val_accuracy: {min: 0.8}, flops_ratio: {max: 0.5}}
```
"""

from __future__ import annotations

import math
from typing import Any

from archsearch.config import TrialConfig
from archsearch.constraints import CONSTRAINABLE, Constraint
from archsearch.durations import parse_duration
from archsearch.rungs import RANKS, rung_epochs
from archsearch.space.check import Check, show
from archsearch.space.spec import SCHEDULERS, SchedulerSpec

_SCHEDULER_KEYS = {
    "name": str,
    "grace_epochs": int,
    "eta": int,
    "bin_decades": float,
    "rank": str,
}
_BOUND_KEYS = {"min": float, "max": float}
#: metrics that are shares in [0, 1]
_FRACTIONS = ("val_accuracy", "flops_ratio", "params_ratio")


def read_scheduler(raw: Any, base: TrialConfig, check: Check) -> SchedulerSpec:
    """``scheduler:``; MOASHA needs at least one rung below ``train.epochs``."""
    section = check.mapping(raw, "scheduler", _SCHEDULER_KEYS)
    name = section.get("name", "fifo")
    if name not in SCHEDULERS:
        check.fail("scheduler.name", f"expected one of: {', '.join(SCHEDULERS)}, got {name!r}")
    if name == "fifo":
        for key in section:
            if key != "name":
                check.fail(f"scheduler.{key}", "applies to name: moasha only; remove it")
        return SchedulerSpec()
    spec = SchedulerSpec(name, **{k: v for k, v in section.items() if k != "name"})
    if spec.grace_epochs < 1:
        check.fail("scheduler.grace_epochs", f"expected an integer >= 1, got {spec.grace_epochs}")
    if spec.eta < 2:
        check.fail("scheduler.eta", f"expected an integer >= 2, got {spec.eta}")
    if not spec.bin_decades > 0:
        check.fail("scheduler.bin_decades", f"expected a number > 0, got {spec.bin_decades}")
    if spec.rank not in RANKS:
        check.fail("scheduler.rank", f"expected one of: {', '.join(RANKS)}, got {spec.rank!r}")
    if not rung_epochs(spec.grace_epochs, spec.eta, base.epochs):
        check.fail(
            "scheduler.grace_epochs",
            f"expected grace_epochs x eta ({spec.grace_epochs} x {spec.eta}) <= train.epochs "
            f"({base.epochs}): a rung needs eta times its epochs after it, and with no rung "
            f"moasha would stop nothing",
        )
    return SchedulerSpec(spec.name, spec.grace_epochs, spec.eta, float(spec.bin_decades), spec.rank)


def read_time_budget(raw: Any, check: Check) -> float | None:
    """``time_budget:`` in seconds (None: no limit)."""
    if raw is None:
        return None
    try:
        return parse_duration(raw)
    except ValueError as error:
        check.fail("time_budget", str(error))


def read_constraints(raw: Any, check: Check) -> tuple[Constraint, ...]:
    """``constraints: {<metric>: {min: x, max: y}}``, at least one bound per metric."""
    section = check.mapping(raw, "constraints", dict.fromkeys(CONSTRAINABLE, dict))
    constraints = []
    for metric, bounds in section.items():
        key = f"constraints.{metric}"
        check.mapping(bounds, key, _BOUND_KEYS)
        if not bounds:
            check.fail(key, "expected min and/or max, e.g. {min: 0.8}")
        for side, value in bounds.items():
            _check_bound(metric, side, value, check)
        low, high = bounds.get("min"), bounds.get("max")
        if low is not None and high is not None and low > high:
            check.fail(key, f"expected min <= max, got min {low} > max {high}")
        constraints.append(Constraint(metric, _float(low), _float(high)))
    return tuple(constraints)


def _check_bound(metric: str, side: str, value: float, check: Check) -> None:
    key = f"constraints.{metric}.{side}"
    if not math.isfinite(value):
        check.fail(key, f"expected a finite number, got {show(value)}")
    if metric in _FRACTIONS and not 0 <= value <= 1:
        check.fail(key, f"expected a fraction in [0, 1] (0.8, not 80), got {value}")
    if value < 0:
        check.fail(key, f"expected a number >= 0, got {value}")


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
