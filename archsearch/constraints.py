"""Constraints on a trial's result: ``constraints: {val_accuracy: {min: 0.8}, flops_ratio:
{max: 0.5}}`` in a space file.

One definition for the two places that use them: the sampler (through Optuna's constraint
values, so it steers away from infeasible regions) and the tracker (an infeasible trial is
tagged ``archsearch.infeasible`` with the violated constraints and never on the front).
Pure functions on numbers and dicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: the metrics of a finished trial a constraint may bound (the test accuracy is only ever
#: reported, never optimised on, so it cannot be constrained)
CONSTRAINABLE = (
    "val_accuracy",
    "flops",
    "flops_ratio",
    "params",
    "params_ratio",
    "latency_ratio",
    "latency_ms",
)


@dataclass(frozen=True)
class Constraint:
    """``metric`` must be at least ``min`` and at most ``max`` (either may be None)."""

    metric: str
    min: float | None = None
    max: float | None = None

    def bounds(self) -> list[tuple[str, float]]:
        """("min", value) and/or ("max", value)."""
        return [(side, v) for side, v in (("min", self.min), ("max", self.max)) if v is not None]

    def describe(self) -> str:
        """e.g. ``val_accuracy >= 0.8`` or ``0.01 <= flops_ratio <= 0.5``."""
        if self.min is not None and self.max is not None:
            return f"{self.min:g} <= {self.metric} <= {self.max:g}"
        if self.min is not None:
            return f"{self.metric} >= {self.min:g}"
        return f"{self.metric} <= {self.max:g}"


def constraint_values(
    metrics: Mapping[str, Any], constraints: Iterable[Constraint]
) -> dict[str, float]:
    """Optuna's convention, one value per bound named ``<metric>.<min|max>``: <= 0 when met,
    > 0 when violated, as a share of the bound (0.25: a quarter below the minimum), so a
    violated accuracy and a violated FLOPs count compare when a sampler sums them. A missing or
    non-finite metric violates every bound on it (value ``inf``)."""
    values = {}
    for constraint in constraints:
        value = _number(metrics.get(constraint.metric))
        for side, bound in constraint.bounds():
            key = f"{constraint.metric}.{side}"
            if not math.isfinite(value):
                values[key] = math.inf
                continue
            miss = bound - value if side == "min" else value - bound
            values[key] = miss / abs(bound) if bound else miss
    return values


def violations(metrics: Mapping[str, Any], constraints: Iterable[Constraint]) -> list[str]:
    """The violated bounds as text, e.g. ``["val_accuracy 0.62 < min 0.8"]``; empty when the
    result is feasible."""
    found = []
    for constraint in constraints:
        value = _number(metrics.get(constraint.metric))
        for side, bound in constraint.bounds():
            if not math.isfinite(value):
                found.append(f"{constraint.metric} missing (bound {side} {bound:g})")
            elif side == "min" and value < bound:
                found.append(f"{constraint.metric} {value:.4g} < min {bound:g}")
            elif side == "max" and value > bound:
                found.append(f"{constraint.metric} {value:.4g} > max {bound:g}")
    return found


def describe_constraints(constraints: Iterable[Constraint]) -> dict[str, float]:
    """Flat settings for the search's parent run: ``constraints.val_accuracy.min: 0.8``."""
    return {
        f"constraints.{c.metric}.{side}": bound for c in constraints for side, bound in c.bounds()
    }


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
