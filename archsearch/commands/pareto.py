"""``archsearch pareto``: the accuracy/FLOPs front of a finished (or running) search, overall or
per granularity, and the members of it that fit a budget."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from archsearch.commands._common import add_budget, add_tracking_uri, budget_of, no_fit_error
from archsearch.errors import ConfigError

if TYPE_CHECKING:
    from archsearch.pareto import Budget

#: what ``--by`` groups the fronts by
GROUPINGS = ("granularity",)


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "pareto",
        help="print the Pareto front of a search: accuracy against FLOPs",
        description=(
            "Print the trials of the most recent search of experiment NAME (the search "
            "space's `name`) that no other trial beats on both validation accuracy and "
            "FLOPs, cheapest first, read from the MLflow store the search logged to. A search "
            "that started from trained weights (init.weights) adds the loaded dense "
            "network's accuracy and FLOPs as a reference line under the table. "
            "--max-flops-ratio and --min-accuracy keep the front members that fit, best "
            "(highest validation accuracy) first: only front members are listed, since the "
            "best model that fits a budget is always on the front (a trial beating it would "
            "fit too); the first row is what `archsearch export NAME` with the same flags "
            "writes. Nothing fits: one line, exit code 2."
        ),
    )
    p.add_argument("name", metavar="NAME", help="experiment: the search space's `name`")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="CSV with run ids, for spreadsheets")
    form.add_argument("--json", action="store_true", help="JSON list of rows, for scripts")
    p.add_argument(
        "--by",
        choices=GROUPINGS,
        default=None,
        help="one front per granularity: each trial is compared only with trials of its own "
        "granularity, so the structured (physically smaller) trade-off shows next to the "
        "weight-sparse one; one table per granularity (CSV and JSON: one row list, with the "
        "granularity of each row)",
    )
    add_budget(p, "list front members with")
    add_tracking_uri(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from archsearch.pareto import format_reference
    from archsearch.tracking import search_reference

    budget = budget_of(args)
    groups = _fronts(args.name, args.tracking_uri, args.by)
    chosen = {group: _chosen(rows, budget) for group, rows in groups.items()}
    if budget and not any(chosen.values()):
        every = [row for rows in groups.values() for row in rows]
        front = f"{args.by} fronts" if args.by else "front"
        raise ConfigError(no_fit_error(args.name, budget, every, front))
    if args.json or args.csv:
        _print_machine(chosen, as_json=args.json)
        return 0
    _print_tables(groups, chosen, budget, args.by)
    reference = format_reference(search_reference(args.name, args.tracking_uri))
    if reference:
        print(reference)
    return 0


def _fronts(name: str, tracking_uri: str | None, by: str | None) -> dict[str, list[dict]]:
    """``{"": overall front}``, or the front of each value of ``by``."""
    from archsearch.pareto import fronts_by
    from archsearch.tracking import front_rows, open_search, rows_of_search

    if by is None:
        return {"": front_rows(name, tracking_uri)}
    search = open_search(name, tracking_uri)
    rows = [{k: v for k, v in row.items() if k != "on_front"} for row in rows_of_search(search)]
    return fronts_by(rows, by, search.objectives)


def _chosen(rows: list[dict[str, Any]], budget: Budget) -> list[dict[str, Any]]:
    """The rows to print, in print order: cheapest first, or best first within a budget."""
    from archsearch.pareto import sort_by_flops, within_budget

    return within_budget(rows, budget) if budget else sort_by_flops(rows)


def _print_machine(chosen: dict[str, list[dict]], *, as_json: bool) -> None:
    """One list of rows in print order (grouped by ``--by``), each naming its granularity."""
    from archsearch.pareto import front_csv

    rows = [row for group in chosen.values() for row in group]
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        print(front_csv(rows, order=list), end="")


def _print_tables(
    groups: dict[str, list[dict]], chosen: dict[str, list[dict]], budget: Budget, by: str | None
) -> None:
    from archsearch.pareto import format_front_table

    if not groups:  # --by, and no finished trial yet
        print(format_front_table([]))
    for index, (group, front) in enumerate(groups.items()):
        if index:
            print()
        heading = _heading(group, front, chosen[group], budget, by)
        if heading:
            print(heading)
        if chosen[group] or not budget:
            print(format_front_table(chosen[group], order=list))


def _heading(
    group: str, front: list[dict], chosen: list[dict], budget: Budget, by: str | None
) -> str | None:
    """``granularity neuron: 3 on its front`` and, within a budget, how many fit."""
    where = f"{by} {group}: " if by else ""
    if not budget:
        return f"{where}{len(front)} trials on its front" if by else None
    fits = f"{len(chosen)} of {len(front)} front members fit {budget.describe()}"
    return f"{where}{fits}" + (", best first" if chosen else "")
