"""``archsearch gates``: the gate registry, as users see it."""

from __future__ import annotations

import argparse


def run(_args: argparse.Namespace) -> int:
    from archsearch.gates import GATES

    gates = GATES.entries()
    width = max(len(info.name) for info in gates)
    for info in gates:
        print(f"{info.name:<{width}}  {info.description}")
        options = ", ".join(f"{k}={v}" for k, v in info.option_defaults().items())
        print(f"{'':<{width}}  estimator: {info.estimator}; options: {options or '(none)'}")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "gates",
        help="list the gate methods",
        description=(
            "List the registered gate methods with a one-line description, their gradient "
            "estimator and the options a search space or --gate-option may set."
        ),
    )
    parser.set_defaults(run=run)
