"""Pareto fronts over trial results: which trials no other trial beats, and how much of the
objective space they cover.

Pure functions on plain numbers and dicts, so the search, the tracking layer and the
``archsearch pareto`` command agree on one definition of "the front" (overall, or within each
granularity), on which trial fits a budget (``Budget``, ``within_budget``: what ``pareto
--max-flops-ratio`` lists and ``export NAME --max-flops-ratio`` exports), plus the front's two
plain renderings (a text table and CSV). The one drawing of the front is the dashboard
(``archsearch.dashboard``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DIRECTIONS = ("max", "min")

#: the objectives a front is computed over unless the space file chooses others
OBJECTIVES: dict[str, str] = {"val_accuracy": "max", "flops": "min"}

#: every objective a space file may choose, with its only sensible direction: accuracy and
#: one or two costs, each cost with a ``<name>_ratio`` column (to the dense network)
OBJECTIVE_CHOICES: dict[str, str] = {
    "val_accuracy": "max",
    "flops": "min",
    "params": "min",
    "latency": "min",
}


def ratio_key(objective: str) -> str:
    """The row column holding a cost objective as a share of the dense network's."""
    return f"{objective.removesuffix('_ratio')}_ratio"


def format_objectives(objectives: dict[str, str]) -> str:
    """``val_accuracy:max,flops:min``: how a search records its objectives (a run tag)."""
    return ",".join(f"{name}:{direction}" for name, direction in objectives.items())


def parse_objectives(text: str | None) -> dict[str, str]:
    """The inverse of ``format_objectives``; ``OBJECTIVES`` for a search that predates it."""
    if not text:
        return dict(OBJECTIVES)
    return dict(part.split(":", 1) for part in text.split(","))


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
    "latency_ratio",
    "latency_ms",
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


def nondominated_ranks(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Non-dominated sorting: rank 0 is the front, rank 1 the front once rank 0 is removed,
    and so on. Points with a NaN or infinite value come last, one rank below every other."""
    ranks = [len(points)] * len(points)
    left = list(range(len(points)))
    rank = 0
    while left:
        flags = non_dominated([points[i] for i in left], directions)
        if not any(flags):  # only non-finite points are left
            break
        for index, on_front in zip(left, flags, strict=True):
            if on_front:
                ranks[index] = rank
        left = [i for i, on_front in zip(left, flags, strict=True) if not on_front]
        rank += 1
    return ranks


def non_dominated_within(
    points: Sequence[Sequence[float]], directions: Sequence[str], groups: Sequence[Hashable]
) -> list[bool]:
    """``non_dominated`` computed separately inside each group (e.g. per granularity): a
    point is compared only with the points of its own group, so a weight-sparse trial cannot
    push a structured one off the structured front."""
    flags = [False] * len(points)
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    for indices in members.values():
        group_flags = non_dominated([points[i] for i in indices], directions)
        for index, flag in zip(indices, group_flags, strict=True):
            flags[index] = flag
    return flags


def fronts_by(
    rows: Sequence[dict[str, Any]], key: str, objectives: dict[str, str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """The front of each value of ``key`` (``"granularity"``) among finished-trial rows, over
    the search's ``objectives`` (default ``OBJECTIVES``); groups in name order, a row without
    the key under ``"-"``."""
    objectives = objectives or OBJECTIVES
    groups = [str(row.get(key) or "-") for row in rows]
    points = [[_float(_objective_value(row, name)) for name in objectives] for row in rows]
    flags = non_dominated_within(points, list(objectives.values()), groups)
    fronts: dict[str, list[dict[str, Any]]] = {group: [] for group in sorted(set(groups))}
    for row, group, on_front in zip(rows, groups, flags, strict=True):
        if on_front:
            fronts[group].append(row)
    return fronts


def _objective_value(row: dict[str, Any], name: str) -> Any:
    """A row's value of one objective: its column, else (latency) the trial's metric."""
    if name in row:
        return row[name]
    return (row.get("metrics") or {}).get(name, row.get(ratio_key(name)))


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# -- choosing by budget --------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """What a chosen model must meet: at most ``max_flops_ratio`` of the dense network's
    FLOPs and ``max_latency_ratio`` of its measured latency, at least ``min_accuracy``
    validation accuracy (the search's objective; the test set is only reported). None: no
    limit."""

    max_flops_ratio: float | None = None
    min_accuracy: float | None = None
    max_latency_ratio: float | None = None

    def __bool__(self) -> bool:
        return any(v is not None for v in self._limits().values()) or (
            self.min_accuracy is not None
        )

    def _limits(self) -> dict[str, float | None]:
        return {"flops_ratio": self.max_flops_ratio, "latency_ratio": self.max_latency_ratio}

    def fits(self, row: dict[str, Any]) -> bool:
        """A missing or non-finite value never fits a limit on it."""
        for key, limit in self._limits().items():
            if limit is not None and not _float(row.get(key)) <= limit:
                return False
        accuracy = _float(row.get("val_accuracy"))
        return self.min_accuracy is None or accuracy >= self.min_accuracy

    def describe(self) -> str:
        """e.g. ``FLOPs <= 5% of dense and val accuracy >= 0.8``."""
        parts = []
        if self.max_flops_ratio is not None:
            parts.append(f"FLOPs <= {100 * self.max_flops_ratio:g}% of dense")
        if self.max_latency_ratio is not None:
            parts.append(f"latency <= {100 * self.max_latency_ratio:g}% of dense")
        if self.min_accuracy is not None:
            parts.append(f"val accuracy >= {self.min_accuracy:g}")
        return " and ".join(parts) or "no limit"


def best_first(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Highest validation accuracy first (ties: fewest FLOPs, then run id): the order in which
    to pick a model that fits a budget. The first row that fits is always on the front: any
    trial beating it would fit too and rank above it."""

    def key(row: dict[str, Any]) -> tuple[float, float, str]:
        accuracy, flops = _float(row.get("val_accuracy")), _float(row.get("flops"))
        return (
            -accuracy if math.isfinite(accuracy) else math.inf,
            flops if math.isfinite(flops) else math.inf,
            str(row.get("run_id") or ""),
        )

    return sorted(rows, key=key)


def within_budget(rows: Sequence[dict[str, Any]], budget: Budget) -> list[dict[str, Any]]:
    """The rows that fit ``budget``, best first."""
    return best_first([row for row in rows if budget.fits(row)])


def span(rows: Sequence[dict[str, Any]]) -> str:
    """What a set of rows covers, for a "nothing fits" message: ``FLOPs 0.31%-45.2% of
    dense, latency 40%-98% of dense, val accuracy 0.281-0.912``."""
    parts = []
    for key, label in (("flops_ratio", "FLOPs"), ("latency_ratio", "latency")):
        ratios = [r for r in (_float(row.get(key)) for row in rows) if math.isfinite(r)]
        if ratios:
            parts.append(f"{label} {100 * min(ratios):.3g}%-{100 * max(ratios):.3g}% of dense")
    accs = [a for a in (_float(row.get("val_accuracy")) for row in rows) if math.isfinite(a)]
    if accs:
        parts.append(f"val accuracy {min(accs):.3g}-{max(accs):.3g}")
    return ", ".join(parts) or "no metrics"


# -- renderings ----------------------------------------------------------------------------

Order = Callable[[Sequence[dict[str, Any]]], list[dict[str, Any]]]


def front_csv(rows: Sequence[dict[str, Any]], order: Order | None = None) -> str:
    """The front as CSV with ``FRONT_COLUMNS``, sorted by FLOPs (or by ``order``), for
    spreadsheets and scripts."""
    out = io.StringIO()
    writer = csv.DictWriter(out, FRONT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in (order or sort_by_flops)(rows):
        writer.writerow({key: _csv_value(row.get(key)) for key in FRONT_COLUMNS})
    return out.getvalue()


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def format_front_table(rows: Sequence[dict[str, Any]], order: Order | None = None) -> str:
    """The front as an aligned text table, cheapest first (or by ``order``), for reading in a
    terminal."""
    if not rows:
        return "(the front is empty: no finished trials)"
    drop = any(DROP_KEY in row for row in rows)  # rows from ``with_accuracy_drop``
    header = _TABLE_HEADER[:6] + ("test drop",) * drop + _TABLE_HEADER[6:]
    lines = [header] + [_table_cells(row, drop) for row in (order or sort_by_flops)(rows)]
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
    """The line under the table for a search with a dense reference, e.g. ``dense reference
    (trained here in 95 s): val 0.8952, test 0.8890, FLOPs 266,200, params 266,610`` (or
    ``(loaded weights)``: the network of ``init.weights``); None when it has none."""
    if not reference:
        return None
    val = _number(reference.get("val_accuracy"), "{:.4f}")
    test = _number(reference.get("test_accuracy"), "{:.4f}")
    flops = _number(reference.get("flops"), "{:,.0f}")
    params = reference.get("params")
    size = "" if params is None else f", params {_number(params, '{:,.0f}')}"
    return f"dense reference ({_origin(reference)}): val {val}, test {test}, FLOPs {flops}{size}"


def _origin(reference: dict[str, Any]) -> str:
    if reference.get("source") != "trained":
        return "loaded weights"
    seconds = reference.get("train_seconds")
    return "trained here" + ("" if seconds is None else f" in {_number(seconds, '{:.0f}')} s")


#: the column of test accuracy below the dense reference, in percentage points
DROP_KEY = "test_accuracy_drop"


def with_accuracy_drop(
    rows: Sequence[dict[str, Any]], reference: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The rows with ``DROP_KEY``: how many percentage points of test accuracy each is below
    the dense reference (negative: above it); unchanged without a reference. Test, not
    validation: the front was chosen on validation accuracy, which makes its validation
    figures optimistic; the test split is measured the same way for both."""
    dense = _float((reference or {}).get("test_accuracy"))
    if not math.isfinite(dense):
        return list(rows)
    return [{**row, DROP_KEY: _drop(dense, _float(row.get("test_accuracy")))} for row in rows]


def _drop(dense: float, accuracy: float) -> float | None:
    return 100 * (dense - accuracy) if math.isfinite(accuracy) else None


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
    "latency %",
    "kept",
)
_RIGHT_ALIGNED = {
    "lambda",
    "val acc",
    "test acc",
    "test drop",
    "FLOPs",
    "FLOPs %",
    "params %",
    "latency %",
}


def _table_cells(row: dict[str, Any], drop: bool = False) -> tuple[str, ...]:
    return (
        str(row.get("run_id") or "")[:8],
        str(row.get("gate") or "-"),
        str(row.get("granularity") or "-"),
        _number(row.get("penalty.lambda"), "{:.3g}"),
        _number(row.get("val_accuracy"), "{:.4f}"),
        _number(row.get("test_accuracy"), "{:.4f}"),
        *([_number(row.get(DROP_KEY), "{:+.2f} pt")] if drop else []),
        _number(row.get("flops"), "{:,.0f}"),
        _number(row.get("flops_ratio"), "{:.2%}"),
        _number(row.get("params_ratio"), "{:.2%}"),
        _number(row.get("latency_ratio"), "{:.1%}"),
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
