"""``archsearch pareto``: the accuracy/FLOPs front of a finished (or running) search, overall or
per granularity, and the members of it that fit a budget."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any, NamedTuple

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
            "with a dense reference (the dense network it trained once, or the one "
            "init.weights loaded) shows it as a line under the table, and each trial's "
            "'test drop': percentage points of test accuracy below it (test, not validation: "
            "the front is chosen on validation accuracy). "
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
    from archsearch.pareto import format_reference, with_accuracy_drop

    budget = budget_of(args)
    search = _read(args.name, args.tracking_uri)
    groups = {  # each row's test accuracy below the dense reference, when there is one
        group: with_accuracy_drop(rows, search.reference)
        for group, rows in _fronts(search, args.by).items()
    }
    chosen = {group: _chosen(rows, budget) for group, rows in groups.items()}
    if budget and not any(chosen.values()):
        every = [row for rows in groups.values() for row in rows]
        front = f"{args.by} fronts" if args.by else "front"
        raise ConfigError(no_fit_error(args.name, budget, every, front))
    if args.json or args.csv:
        _print_machine(chosen, as_json=args.json)
        return 0
    _print_tables(groups, chosen, budget, args.by)
    reference = format_reference(search.reference)
    if reference:
        print(reference)
    return 0


class _Search(NamedTuple):
    """What the command prints from: every finished trial's row (with ``on_front``, as the
    search tagged it), the objectives it ran with and its dense reference."""

    rows: list[dict[str, Any]]
    objectives: dict[str, str]
    reference: dict[str, Any] | None


def _read(name: str, tracking_uri: str | None) -> _Search:
    """The latest search of ``name``: straight from the file of a local SQLite store
    (``sqlite_runs``: MLflow's import was most of the command's time), else through MLflow,
    which also words every error (no store, no experiment, no search); both give the same
    rows (``tests/test_pareto_fast.py``)."""
    from archsearch.pareto import parse_objectives
    from archsearch.run_rows import OBJECTIVES_TAG, reference_from_run, rows_of_runs
    from archsearch.sqlite_runs import read_search
    from archsearch.store_file import resolve_tracking_uri

    found = read_search(resolve_tracking_uri(tracking_uri), name)
    if found is not None:
        objectives = parse_objectives(found.parent.data.tags.get(OBJECTIVES_TAG))
        return _Search(rows_of_runs(found.children), objectives, reference_from_run(found.parent))
    from archsearch.tracking import open_search, rows_of_search
    from archsearch.tracking import reference_from_run as reference_of_parent

    search = open_search(name, tracking_uri)
    return _Search(rows_of_search(search), search.objectives, reference_of_parent(search.parent))


def _fronts(search: _Search, by: str | None) -> dict[str, list[dict]]:
    """``{"": overall front}`` (the members the search tagged), or the front of each value of
    ``by``, computed over the search's objectives."""
    from archsearch.pareto import fronts_by

    rows = [
        {key: value for key, value in row.items() if key != "on_front"}
        for row in search.rows
        if by or row["on_front"]
    ]
    return fronts_by(rows, by, search.objectives) if by else {"": rows}


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
