"""The project's one yardstick for a Pareto front, and the exact hypervolume behind it.

A front of pruned networks is judged by one number: the share of a fixed box that the front
dominates. The box is accuracy in [0.1, 1] (0.1 is chance on ten classes: a trial no better
than guessing earns nothing) times log10 of the cost ratio to the dense network in [-3, 0]
(from a thousandth of the dense cost to the dense cost itself). Benchmarks and the live
``hypervolume`` metric both read ``front_hypervolume``, so their numbers compare.

Why the log of the ratio: pruning spans decades. Going from 10% to 1% of the dense FLOPs is as
much of an achievement as going from 100% to 10%, yet on a linear axis it would be worth a
tenth as much and the cheap end of the front, where pruning is interesting, would vanish.

Why clipped: a fixed box makes the number comparable across searches and bounded in [0, 1].
A trial cheaper than a thousandth of the dense cost sits on the box's best edge; one at or
above the dense cost, or at or below chance accuracy, adds nothing.

A search with three objectives (accuracy plus two of FLOPs, parameters and latency) is scored
the same way one dimension up: its value is the share of the 3-D unit box the front dominates,
so it is comparable with other 3-objective searches over the same objectives, not with a 2-D
value (the share of a cube is typically smaller than the share of its face).

``dominated_volume`` is exact in any number of dimensions: a sweep in 2-D and "hypervolume by
slicing objectives" above it (cut along the last axis at every point, add slab depth times the
volume of the slab's cross-section one dimension down).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from archsearch.pareto import non_dominated, ratio_key


@dataclass(frozen=True)
class Yardstick:
    """The box a front is measured in: ``accuracy`` (chance, perfect) and ``log10_cost``
    (log10 of the best cost ratio that still counts, log10 of the dense cost)."""

    accuracy: tuple[float, float] = (0.1, 1.0)
    log10_cost: tuple[float, float] = (-3.0, 0.0)


#: the one box every front is measured in
YARDSTICK = Yardstick()
ACCURACY_RANGE = YARDSTICK.accuracy
LOG10_COST_RANGE = YARDSTICK.log10_cost


# -- exact hypervolume ---------------------------------------------------------------------


def dominated_volume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact volume of the region dominated by ``points`` and bounded by ``reference``, every
    objective minimised. A point adds something only if it is finite and strictly better than
    the reference in every coordinate; dominated points and duplicates add nothing, so the
    value never depends on order or repetition. No points: 0.0."""
    ref = np.asarray(reference, dtype=float)
    if ref.ndim != 1 or ref.size == 0 or not np.isfinite(ref).all():
        raise ValueError(f"reference must be a finite point of 1 or more numbers, got {reference}")
    if len(points) == 0:
        return 0.0
    values = np.asarray(points, dtype=float)
    if values.ndim != 2 or values.shape[1] != ref.size:
        raise ValueError(f"every point must have {ref.size} coordinates, like the reference")
    inside = np.isfinite(values).all(axis=1) & (values < ref).all(axis=1)
    values = values[inside]
    if len(values) == 0:
        return 0.0
    return float(_volume(_minimal(values), ref))


def _minimal(values: np.ndarray) -> np.ndarray:
    """The points no other point beats, each once: the only ones that shape the volume."""
    unique = np.unique(values, axis=0)
    if len(unique) < 2:
        return unique
    return unique[np.array(non_dominated(unique, ("min",) * unique.shape[1]))]


def _volume(values: np.ndarray, ref: np.ndarray) -> float:
    """Volume for points already inside the reference (any may be dominated)."""
    if values.shape[1] == 1:
        return float(ref[0] - values[:, 0].min())
    if values.shape[1] == 2:
        return _area(values, ref)
    return _sliced(values, ref)


def _area(values: np.ndarray, ref: np.ndarray) -> float:
    """2-D sweep: left to right, each point that lowers the best second coordinate so far adds
    the strip from its own x to the reference, as tall as the drop."""
    ordered = values[np.lexsort((values[:, 1], values[:, 0]))]
    best = np.minimum.accumulate(ordered[:, 1])
    above = np.concatenate(([ref[1]], best[:-1]))
    return float(np.sum((ref[0] - ordered[:, 0]) * (above - best)))


def _sliced(values: np.ndarray, ref: np.ndarray) -> float:
    """Slice along the last axis: between consecutive cuts the dominated cross-section is the
    volume, one dimension down, of every point at or below the slab."""
    ordered = values[np.argsort(values[:, -1], kind="stable")]
    cuts = np.append(ordered[:, -1], ref[-1])
    total = 0.0
    for index in range(len(ordered)):
        depth = cuts[index + 1] - cuts[index]
        if depth <= 0:
            continue
        below = ordered[: index + 1, :-1]
        if below.shape[1] > 2:  # the 2-D sweep copes with dominated points; deeper cuts prune
            below = _minimal(below)
        total += depth * _volume(below, ref[:-1])
    return total


# -- the yardstick on result rows ------------------------------------------------------------


def normalised_point(row: Mapping[str, Any], objectives: Mapping[str, str]) -> list[float] | None:
    """One result row as a point in the unit box, 0 best and 1 worst in every coordinate, in the
    order of ``objectives``: a "max" objective read as accuracy over ``YARDSTICK.accuracy``, a
    "min" objective ``name`` read from the row's ``<name>_ratio`` (its ratio to the dense
    network) on a log10 scale over ``YARDSTICK.log10_cost``. None if a value is missing or is
    not a finite number: such a trial is not on any front."""
    point = []
    for name, direction in objectives.items():
        if direction == "max":
            value = _finite(row.get(name))
            coordinate = None if value is None else 1.0 - _unit(value, YARDSTICK.accuracy)
        elif direction == "min":
            ratio = _finite(row.get(ratio_key(name)))
            coordinate = None if ratio is None else _log_cost(ratio)
        else:
            raise ValueError(
                f"objective {name!r}: direction must be 'max' or 'min', got {direction!r}"
            )
        if coordinate is None:
            return None
        point.append(coordinate)
    return point


def front_hypervolume(rows: Sequence[Mapping[str, Any]], objectives: Mapping[str, str]) -> float:
    """The yardstick: the share of the unit box (see the module docstring) that the rows
    dominate, in [0, 1]. Pass all finished trials or only the front: beaten trials add
    nothing. Rows without usable values are skipped."""
    if not objectives:
        raise ValueError("front_hypervolume needs at least one objective")
    points = [p for p in (normalised_point(row, objectives) for row in rows) if p is not None]
    return dominated_volume(points, [1.0] * len(objectives))


def box_point(accuracy: float, cost_ratio: float) -> tuple[float, float]:
    """(accuracy, cost ratio) as a point in the unit box, both coordinates minimised: what
    ``front_hypervolume`` measures a two-objective row as."""
    return 1.0 - _unit(accuracy, YARDSTICK.accuracy), _log_cost(cost_ratio)


def exclusive_shares(
    points: Sequence[tuple[float, float]], accuracy_floor: float | None = None
) -> list[float]:
    """For each (accuracy, cost ratio), the share of the box that it alone dominates among
    ``points``: what the yardstick loses if it goes. A duplicate or dominated point, or one
    outside the box (at or below chance, at the dense cost), has 0; a non-finite one too.

    ``accuracy_floor``: a search's accuracy constraint. A point below it is never on the
    search's front, so it holds nothing and shades nothing; the others are measured from
    chance, as the yardstick measures the front they can join. (Raising the box's bottom to
    the floor instead weighed a cheap point at 84% against a dear one at 90% as 4 : 10 of
    height where the yardstick weighs them 74 : 80.)"""
    floor = -math.inf if accuracy_floor is None else accuracy_floor
    boxed = [
        box_point(a, c) if math.isfinite(a + c) and a >= floor else (1.0, 1.0) for a, c in points
    ]
    whole = dominated_volume(boxed, (1.0, 1.0))
    return [
        max(0.0, whole - dominated_volume(boxed[:i] + boxed[i + 1 :], (1.0, 1.0)))
        for i in range(len(boxed))
    ]


def _log_cost(ratio: float) -> float:
    """0 at a thousandth of the dense cost or less (a ratio of 0 included), 1 at the dense cost
    or more."""
    if ratio <= 0:
        return 0.0
    return _unit(math.log10(ratio), YARDSTICK.log10_cost)


def _unit(value: float, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return min(1.0, max(0.0, (value - low) / (high - low)))


def _finite(value: Any) -> float | None:
    """A real, finite number as float; None for anything else (a bool is not a metric)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        return None
    number = float(value)
    return number if math.isfinite(number) else None
