"""``archsearch pareto``: the accuracy/FLOPs front of a finished (or running) search."""

from __future__ import annotations

import argparse
import json

from archsearch.commands._common import add_tracking_uri


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "pareto",
        help="print the Pareto front of a search: accuracy against FLOPs",
        description=(
            "Print the trials of the most recent search of experiment NAME (the search "
            "space's `name`) that no other trial beats on both validation accuracy and "
            "FLOPs, cheapest first, read from the MLflow store the search logged to. A search "
            "that started from trained weights (init.weights) adds the loaded dense "
            "network's accuracy and FLOPs as a reference line under the table."
        ),
    )
    p.add_argument("name", metavar="NAME", help="experiment: the search space's `name`")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="CSV with run ids, for spreadsheets")
    form.add_argument("--json", action="store_true", help="JSON list of rows, for scripts")
    add_tracking_uri(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from archsearch.pareto import format_front_table, format_reference, front_csv, sort_by_flops
    from archsearch.tracking import front_rows, search_reference

    rows = front_rows(args.name, args.tracking_uri)
    if args.json:
        print(json.dumps(sort_by_flops(rows), indent=2))
    elif args.csv:
        print(front_csv(rows), end="")
    else:
        print(format_front_table(rows))
        reference = format_reference(search_reference(args.name, args.tracking_uri))
        if reference:
            print(reference)
    return 0
