"""``archsearch gates``: the gate registry, as users see it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any

#: the gates package: once a process has imported it, its registry is the whole list
GATES_PACKAGE = "archsearch.gates"


def run(_args: argparse.Namespace) -> int:
    rows = _rows()
    width = max(len(name) for name, *_ in rows)
    for name, description, estimator, defaults in rows:
        print(f"{name:<{width}}  {description}")
        options = ", ".join(f"{k}={v}" for k, v in defaults.items())
        print(f"{'':<{width}}  estimator: {estimator}; options: {options or '(none)'}")
    return 0


def _rows() -> list[tuple[str, str, str, Mapping[str, Any]]]:
    """The registry's entries where the gate classes are loaded already (they may include
    methods registered by the caller's own code); otherwise the built-in cards, which need no
    torch (``archsearch.gate_cards``)."""
    if GATES_PACKAGE in sys.modules:
        from archsearch.gates import GATES

        return [(i.name, i.description, i.estimator, i.option_defaults()) for i in GATES.entries()]
    from archsearch.gate_cards import BUILT_IN

    return [(c.name, c.description, c.estimator, c.options) for c in BUILT_IN]


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
