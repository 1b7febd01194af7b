"""``archsearch dashboard``: the interactive Pareto dashboard of a search as one HTML file."""

from __future__ import annotations

import argparse
from pathlib import Path

from archsearch.commands._common import add_tracking_uri


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "dashboard",
        help="write an interactive HTML dashboard of a search's accuracy/FLOPs trade-off",
        description=(
            "Write one self-contained HTML file (no network needed to view it) for the most "
            "recent search of experiment NAME: validation and test accuracy against FLOPs for "
            "every finished trial, the Pareto front, hypervolume over trials, and per run its "
            "parameters, kept layer widths, FLOPs per layer, MLflow link and export command."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("name", metavar="NAME", help="experiment: the search space's `name`")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE.html",
        help="where to write the page (replaced atomically)",
    )
    add_tracking_uri(p)
    p.add_argument(
        "--ui-url",
        default=None,
        metavar="URL",
        help="MLflow UI the run links point to (default: the tracking server itself, else "
        "http://127.0.0.1:5000 as started by `archsearch ui`)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from archsearch.dashboard import write_dashboard
    from archsearch.errors import ConfigError

    if args.output.is_dir():
        raise ConfigError(f"output {args.output} is a directory; pass a file path to -o")
    report = write_dashboard(args.name, args.output, args.tracking_uri, ui_url=args.ui_url)
    print(f"wrote {report.path} ({report.bytes / 1024:.0f} KiB)")
    print(report.summary())
    print(f"open {report.path.resolve().as_uri()}")
    return 0
