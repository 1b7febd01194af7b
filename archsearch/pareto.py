"""Pareto fronts over trial results: which trials no other trial beats, and how much of the
objective space they cover.

Pure functions on plain numbers and dicts, so the search, the tracking layer and the
``archsearch pareto`` command agree on one definition of "the front", plus its two plain
renderings (a text table and CSV). The one drawing of the front is the dashboard
(``archsearch.dashboard``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

DIRECTIONS = ("max", "min")

#: the objectives every front is computed over, with their only sensible direction: the one
#: definition the space file, the tracker and the dashboard all read
OBJECTIVES: dict[str, str] = {"val_accuracy": "max", "flops": "min"}

#: the columns of ``pareto.csv`` and ``archsearch pareto --csv``, in order
FRONT_COLUMNS = (
    "run_id",
    "trial_id",
    "gate",
    "granularity",
    "penalty.lambda",
    "val_accuracy",
    "test_accuracy",
    "flops",
    "flops_ratio",
    "params",
    "params_ratio",
    "architecture",
)


def _as_minimisation(points: Sequence[Sequence[float]], directions: Sequence[str]) -> np.ndarray:
    """Flip "max" objectives so that smaller is better everywhere; one comparison rule."""
    for direction in directions:
        if direction not in DIRECTIONS:
            raise ValueError(f"objective direction must be 'max' or 'min', got {direction!r}")
    values = np.asarray(points, dtype=float).reshape(len(points), len(directions))
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return values * signs


def non_dominated(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[bool]:
    """True for each point that no other point dominates (at least as good in every objective,
    strictly better in one). Equal points do not dominate each other, so duplicates of a front
    point are all on the front. Points with a NaN or infinite value are never on it and never
    push anything off it: a diverged trial is not a trade-off."""
    if len(points) == 0:
        return []
    values = _as_minimisation(points, directions)
    finite = np.isfinite(values).all(axis=1)
    candidates = values[finite]
    # dominated[i, j]: point j dominates point i
    no_worse = (candidates[None, :, :] <= candidates[:, None, :]).all(axis=2)
    better = (candidates[None, :, :] < candidates[:, None, :]).any(axis=2)
    front = ~(no_worse & better).any(axis=1)
    result = np.zeros(len(values), dtype=bool)
    result[np.flatnonzero(finite)] = front
    return result.tolist()


def hypervolume_2d(
    points: Sequence[Sequence[float]], directions: Sequence[str], reference: Sequence[float]
) -> float:
    """Area dominated by the points and bounded by ``reference`` (exact, by a sweep). One number
    that grows whenever the search finds a better trade-off, so it shows progress over trials.
    Points no better than the reference in both objectives add nothing."""
    if len(directions) != 2 or len(reference) != 2:
        raise ValueError("hypervolume_2d needs exactly two objectives and a 2-D reference")
    if len(points) == 0:
        return 0.0
    values = _as_minimisation(points, directions)
    ref = _as_minimisation([reference], directions)[0]
    inside = np.isfinite(values).all(axis=1) & (values < ref).all(axis=1)
    values = values[inside]
    if len(values) == 0:
        return 0.0
    front = values[np.array(non_dominated(values, ("min", "min")))]
    front = front[np.lexsort((front[:, 1], front[:, 0]))]
    area, best_y = 0.0, ref[1]
    for x, y in front:
        if y < best_y:
            area += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(area)


def front_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The front as CSV with ``FRONT_COLUMNS``, sorted by FLOPs, for spreadsheets and scripts."""
    out = io.StringIO()
    writer = csv.DictWriter(out, FRONT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in sort_by_flops(rows):
        writer.writerow({key: _csv_value(row.get(key)) for key in FRONT_COLUMNS})
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def format_front_table(rows: Sequence[dict[str, Any]]) -> str:
    """The front as an aligned text table, cheapest first, for reading in a terminal."""
    if not rows:
        return "(the front is empty: no finished trials)"
    header = _TABLE_HEADER
    lines = [header] + [_table_cells(row) for row in sort_by_flops(rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    rendered = []
    for line in lines:
        cells = [
            cell.rjust(width) if name in _RIGHT_ALIGNED else cell.ljust(width)
            for name, cell, width in zip(header, line, widths, strict=True)
        ]
        rendered.append("  ".join(cells).rstrip())
    return "\n".join(rendered)


def format_reference(reference: dict[str, Any] | None) -> str | None:
    """The line under the table for a search that started from trained dense weights, e.g.
    ``dense reference (loaded weights): val 0.9120, test 0.9050, FLOPs 1,234,560``; None
    when the search has no reference."""
    if not reference:
        return None
    val = _number(reference.get("val_accuracy"), "{:.4f}")
    test = _number(reference.get("test_accuracy"), "{:.4f}")
    flops = _number(reference.get("flops"), "{:,.0f}")
    return f"dense reference (loaded weights): val {val}, test {test}, FLOPs {flops}"


_TABLE_HEADER = (
    "run",
    "gate",
    "granularity",
    "lambda",
    "val acc",
    "test acc",
    "FLOPs",
    "FLOPs %",
    "params %",
    "kept",
)
_RIGHT_ALIGNED = {"lambda", "val acc", "test acc", "FLOPs", "FLOPs %", "params %"}


def _table_cells(row: dict[str, Any]) -> tuple[str, ...]:
    return (
        str(row.get("run_id") or "")[:8],
        str(row.get("gate") or "-"),
        str(row.get("granularity") or "-"),
        _number(row.get("penalty.lambda"), "{:.3g}"),
        _number(row.get("val_accuracy"), "{:.4f}"),
        _number(row.get("test_accuracy"), "{:.4f}"),
        _number(row.get("flops"), "{:,.0f}"),
        _number(row.get("flops_ratio"), "{:.2%}"),
        _number(row.get("params_ratio"), "{:.2%}"),
        str(row.get("architecture") or "-"),
    )


def _number(value: Any, spec: str) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "-"
    return spec.format(number) if math.isfinite(number) else "-"


def sort_by_flops(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cheapest first (ties: most accurate first): the order a user picks a model in."""

    def key(row: dict[str, Any]) -> tuple[float, float]:
        flops = row.get("flops")
        accuracy = row.get("val_accuracy")
        return (
            float(flops) if flops is not None else math.inf,
            -float(accuracy) if accuracy is not None else math.inf,
        )

    return sorted(rows, key=key)
