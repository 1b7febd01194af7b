"""Pareto fronts over trial results: which trials no other trial beats, and how much of the
objective space they cover.

Pure functions on plain numbers and dicts, so the search, the tracking layer and the
``archsearch pareto`` command agree on one definition of "the front".
"""

from __future__ import annotations

import csv
import html
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


_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
_W, _H = 760, 460
_LEFT, _RIGHT, _TOP, _BOTTOM = 80, 24, 36, 56


def front_html(points: Sequence[dict[str, Any]], *, title: str, failed: int = 0) -> str:
    """A self-contained page (inline SVG, no scripts, nothing fetched) plotting validation
    accuracy against FLOPs for every finished trial, with the front as a line. Hovering a point
    shows its run, sampled parameters and results, so the page works offline, in the MLflow
    artifact viewer and when mailed around. Each point is a row plus ``on_front``."""
    shown = [p for p in points if _finite(p.get("flops")) and _finite(p.get("val_accuracy"))]
    front = sort_by_flops([p for p in shown if p.get("on_front")])
    gates = sorted({str(p.get("gate")) for p in shown})
    colour = {gate: _PALETTE[i % len(_PALETTE)] for i, gate in enumerate(gates)}
    scale = _Scale(shown)
    parts = [_axes_svg(scale)]
    if front:
        line = " ".join(scale.xy(p) for p in front)
        parts.append(f'<polyline class="front" points="{line}"/>')
    for p in sorted(shown, key=lambda p: bool(p.get("on_front"))):
        cx, cy = scale.x(p["flops"]), scale.y(p["val_accuracy"])
        kind = "member" if p.get("on_front") else "trial"
        parts.append(
            f'<circle class="{kind}" cx="{cx:.1f}" cy="{cy:.1f}" r="{6 if kind == "member" else 4}"'
            f' fill="{colour[str(p.get("gate"))]}"><title>{html.escape(_tooltip(p))}</title>'
            "</circle>"
        )
    parts.append(_legend_svg(colour))
    summary = (
        f"{len(shown)} finished trials, {len(front)} on the front"
        + (f", {failed} failed" if failed else "")
        + ". Hover a point for its parameters."
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" width="{_W}" '
        f'height="{_H}" role="img" aria-label="{html.escape(title)}">' + "".join(parts) + "</svg>"
    )
    return _PAGE.format(
        title=html.escape(title),
        summary=html.escape(summary),
        svg=svg,
        table=_front_table_html(front),
    )


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class _Scale:
    """Data → SVG coordinates: FLOPs from zero (so ratios read off the axis), accuracy
    zoomed to the trials' range (differences of a point matter)."""

    def __init__(self, points: Sequence[dict[str, Any]]) -> None:
        flops = [float(p["flops"]) for p in points] or [1.0]
        accuracy = [float(p["val_accuracy"]) for p in points] or [0.0, 1.0]
        self.x_max = max(flops) * 1.05 or 1.0
        low, high = math.floor(min(accuracy) * 20) / 20, math.ceil(max(accuracy) * 20) / 20
        self.y_min, self.y_max = (low, high) if high > low else (low - 0.05, low + 0.05)

    def x(self, value: float) -> float:
        return _LEFT + (_W - _LEFT - _RIGHT) * float(value) / self.x_max

    def y(self, value: float) -> float:
        span = self.y_max - self.y_min
        return _H - _BOTTOM - (_H - _TOP - _BOTTOM) * (float(value) - self.y_min) / span

    def xy(self, p: dict[str, Any]) -> str:
        return f"{self.x(p['flops']):.1f},{self.y(p['val_accuracy']):.1f}"


def _axes_svg(scale: _Scale) -> str:
    parts = [
        f'<line class="axis" x1="{_LEFT}" y1="{_H - _BOTTOM}" x2="{_W - _RIGHT}" '
        f'y2="{_H - _BOTTOM}"/>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_H - _BOTTOM}"/>',
    ]
    for value in _nice_ticks(0.0, scale.x_max):
        x = scale.x(value)
        parts.append(
            f'<line class="grid" x1="{x:.1f}" y1="{_TOP}" x2="{x:.1f}" y2="{_H - _BOTTOM}"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{_H - _BOTTOM + 18}" text-anchor="middle">{_si(value)}</text>'
        )
    for value in _nice_ticks(scale.y_min, scale.y_max):
        y = scale.y(value)
        parts.append(
            f'<line class="grid" x1="{_LEFT}" y1="{y:.1f}" x2="{_W - _RIGHT}" y2="{y:.1f}"/>'
        )
        parts.append(f'<text x="{_LEFT - 8}" y="{y + 4:.1f}" text-anchor="end">{value:.3g}</text>')
    parts.append(
        f'<text x="{(_LEFT + _W - _RIGHT) / 2}" y="{_H - 14}" text-anchor="middle">'
        "FLOPs (fvcore, one multiply-accumulate = one flop)</text>"
    )
    parts.append(
        f'<text transform="translate(18 {(_TOP + _H - _BOTTOM) / 2}) rotate(-90)" '
        'text-anchor="middle">validation accuracy</text>'
    )
    return "".join(parts)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) inside [low, high]."""
    raw = (high - low) / count
    if raw <= 0:
        return [low]
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step - 1e-9)
    return [i * step for i in range(first, math.floor(high / step + 1e-9) + 1)]


def _legend_svg(colour: dict[str, str]) -> str:
    parts, x, y = [], _LEFT + 10, 14
    for gate, fill in colour.items():
        if x > _W - 140:
            x, y = _LEFT + 10, y + 16
        parts.append(
            f'<circle cx="{x}" cy="{y - 4}" r="4" fill="{fill}"/>'
            f'<text x="{x + 8}" y="{y}">{html.escape(gate)}</text>'
        )
        x += 30 + 7 * len(gate)
    return "".join(parts)


def _si(value: float) -> str:
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{suffix}"
    return f"{value:.3g}"


def _tooltip(p: dict[str, Any]) -> str:
    lines = [
        f"run {p.get('run_id', '')}  trial {p.get('trial_id', '')}",
        f"{p.get('gate')} / {p.get('granularity')}"
        + ("  (on the front)" if p.get("on_front") else ""),
    ]
    lines += [f"{key} = {value}" for key, value in sorted((p.get("config") or {}).items())]
    lines += [
        f"val accuracy {_number(p.get('val_accuracy'), '{:.4f}')}  "
        f"test accuracy {_number(p.get('test_accuracy'), '{:.4f}')}",
        f"FLOPs {_number(p.get('flops'), '{:,.0f}')} ({_number(p.get('flops_ratio'), '{:.2%}')})"
        f"  params {_number(p.get('params_ratio'), '{:.2%}')}",
        f"kept {p.get('architecture') or '-'}",
    ]
    return "\n".join(lines)


def _front_table_html(front: Sequence[dict[str, Any]]) -> str:
    header = "".join(f"<th>{html.escape(name)}</th>" for name in _TABLE_HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in _table_cells(row)) + "</tr>"
        for row in front
    )
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
svg text {{ font-size: 12px; fill: #333; }}
.axis {{ stroke: #333; }} .grid {{ stroke: #e5e5e5; }}
.front {{ fill: none; stroke: #222; stroke-width: 1.5; }}
circle.trial {{ opacity: 0.55; }} circle.member {{ stroke: #000; stroke-width: 1.5; }}
circle:hover {{ stroke: #000; stroke-width: 3; opacity: 1; }}
table {{ border-collapse: collapse; margin-top: 1em; font-size: 13px; }}
th, td {{ padding: 2px 10px; border-bottom: 1px solid #ddd; text-align: left;
          white-space: nowrap; }}
</style></head>
<body><h2>{title}</h2><p>{summary}</p>
{svg}
<h3>Front (cheapest first)</h3>
{table}
</body></html>
"""
