"""Helpers every command shares."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from archsearch.errors import ArchSearchError

if TYPE_CHECKING:
    from archsearch.pareto import Budget


def key_values(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` flags; values are read as YAML so numbers and lists keep their types."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ArchSearchError(f"{flag} expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options


def add_tracking_uri(parser: argparse.ArgumentParser, what: str = "MLflow store") -> None:
    """The one --tracking-uri flag every MLflow-facing command shares."""
    parser.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help=f"{what} (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this folder)",
    )


def add_budget(parser: argparse.ArgumentParser, what: str) -> None:
    """``--max-flops-ratio``, ``--max-latency-ratio`` and ``--min-accuracy``: the budget a
    chosen model must meet."""
    parser.add_argument(
        "--max-flops-ratio",
        type=_fraction("--max-flops-ratio"),
        default=None,
        metavar="R",
        help=f"{what} at most R of the dense network's FLOPs (0.05 or 5%%)",
    )
    parser.add_argument(
        "--max-latency-ratio",
        type=_fraction("--max-latency-ratio"),
        default=None,
        metavar="R",
        help=f"{what} at most R of the dense network's measured latency at batch 1 (0.5 or 50%%)",
    )
    parser.add_argument(
        "--min-accuracy",
        type=_fraction("--min-accuracy"),
        default=None,
        metavar="A",
        help=f"{what} at least validation accuracy A (0.8 or 80%%)",
    )


def budget_of(args: argparse.Namespace) -> Budget:
    from archsearch.pareto import Budget

    return Budget(args.max_flops_ratio, args.min_accuracy, args.max_latency_ratio)


def _fraction(flag: str) -> Callable[[str], float]:
    """A number in (0, 1], or a percentage (``5%``); argparse turns the error into one line."""

    def parse(text: str) -> float:
        percent = text.strip().endswith("%")
        try:
            value = float(text.strip().removesuffix("%")) / (100 if percent else 1)
        except ValueError:
            value = float("nan")
        if not 0 < value <= 1:
            raise argparse.ArgumentTypeError(
                f"expected a fraction in (0, 1] such as 0.05, or a percentage such as 5%, "
                f"got {text!r}"
            )
        return value

    parse.__name__ = flag  # argparse names the type in its message
    return parse


def _cost_flags(budget: Budget) -> str:
    """The cost limits a user set (the ones to raise), else the one most people reach for."""
    given = [
        flag
        for flag, limit in (
            ("--max-flops-ratio", budget.max_flops_ratio),
            ("--max-latency-ratio", budget.max_latency_ratio),
        )
        if limit is not None
    ]
    return " or ".join(given or ["--max-flops-ratio"])


def no_fit_error(
    experiment: str, budget: Budget, rows: Sequence[dict[str, Any]], front: str = "front"
) -> str:
    """Why nothing was chosen from ``rows`` (the members of ``front``), and what they offer."""
    from archsearch.pareto import span

    if not rows:
        return (
            f"the latest search of {experiment!r} has no finished trial yet; nothing fits "
            f"{budget.describe()}"
        )
    return (
        f"nothing on the {front} of the latest search of {experiment!r} fits "
        f"{budget.describe()} (its {len(rows)} members span {span(rows)}); raise "
        f"{_cost_flags(budget)} or lower --min-accuracy"
    )
