"""The ``archsearch`` command line.

Each command lives in its own module under ``archsearch.commands`` with ``add_parser`` and
``run``. Every user error (ArchSearchError, a bad flag) becomes one line on stderr and exit
code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from archsearch.errors import ArchSearchError

EXIT_USER_ERROR = 2

#: command modules, in the order ``archsearch --help`` lists them
COMMANDS: tuple[str, ...] = ("search", "train", "gates", "pareto", "ui", "export", "dashboard")


class _Parser(argparse.ArgumentParser):
    """argparse prints usage plus the error; we print the error alone, as one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="archsearch",
        description="Find the best pruned version of a neural network: differentiable gates, "
        "a multi-objective search over accuracy and FLOPs, and export of the chosen subnetwork.",
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"archsearch.commands.{name}").add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ArchSearchError as error:
        print(f"archsearch {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"archsearch {args.command}: interrupted", file=sys.stderr)
        return 130


def console() -> NoReturn:
    """The installed ``archsearch`` command. The process ends here, so the interpreter's last
    garbage collection (2 s after a search, with torch, Ray and MLflow loaded, on the 2-vCPU
    machine) would free nothing that matters: frozen objects are left out of it."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    console()
