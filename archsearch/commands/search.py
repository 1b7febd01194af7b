"""``archsearch search``: run a search space file through Ray Tune, Optuna and MLflow."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from archsearch.commands._common import add_tracking_uri
from archsearch.durations import format_duration, parse_duration

if TYPE_CHECKING:
    from archsearch.search import SearchOutcome

DESCRIPTION = """\
Search the accuracy/FLOPs trade-off of a search space file: Ray Tune runs the trials (each a
full prune-and-fine-tune, like `archsearch train`), Optuna's multi-objective sampler picks the
next points (val_accuracy: max, flops: min), and every trial becomes an MLflow child run, with
the runs on the Pareto front tagged archsearch.pareto=true. Prints one line per finished trial,
then the front as a table (stdout).

Without --address the search starts a local Ray with CPUs for `concurrency` trials. On a
cluster (see the README's cluster recipe): `ray start --head --port=6379` on one machine and
`ray start --address=HEAD:6379` on the others, all with RAY_AUTH_MODE=token and the same
~/.ray/auth_token (a head turns token authentication on by itself when that file exists, a
worker does not); an MLflow server the driver can reach; a --storage folder every node can
write (NFS). Then, from any machine holding the token:
  archsearch search SPACE.yaml --address HEAD:6379 --tracking-uri http://HEAD:5000 \\
      --storage /shared/ray_results

Ctrl-C stops the search and saves it; the same command with --resume continues it, re-runs the
trials that were cut off, and ends with the requested number of trials, none logged twice.

--time-budget 30m (or the file's `time_budget`) ends the search when the time is up: running
trials are stopped and logged as stopped, the rest never start, the front is logged, exit 0.
"""


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "search",
        help="search the accuracy/FLOPs Pareto front of a search space file (Ray + Optuna)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "space", metavar="SPACE.yaml", help="search space file, e.g. search_spaces/quickstart.yaml"
    )
    p.add_argument(
        "--trials", type=int, metavar="N", help="number of trials (default: the file's `trials`)"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="C",
        help="trials at once (default: the file's `concurrency`)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="seed of the sampler (default: the "
        "file's `sampler.seed`); each trial's own seed is `train.seed`",
    )
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="join a running Ray cluster instead of starting a local one",
    )
    add_tracking_uri(p)
    p.add_argument(
        "--storage",
        metavar="DIR",
        help="where Ray keeps trial files and the state "
        "--resume needs (default: ./ray_results); shared by all nodes on a cluster",
    )
    p.add_argument(
        "--time-budget",
        type=_duration,
        metavar="DURATION",
        help="end the search cleanly after DURATION (30m, 90s, 1.5h; default: the file's "
        "`time_budget`, else no limit), counted from this command's start; the front so far is "
        "logged as the search's",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted search of "
        "this space from --storage; the other flags, if given, must match the start",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from archsearch.pareto import format_front_table
    from archsearch.search import run_search
    from archsearch.space import load_spec

    spec = load_spec(args.space)
    started = time.monotonic()
    outcome = run_search(
        spec,
        trials=args.trials,
        concurrency=args.concurrency,
        seed=args.seed,
        address=args.address,
        tracking_uri=args.tracking_uri,
        storage=args.storage,
        resume=args.resume,
        time_budget=args.time_budget,
        on_progress=_progress,
    )
    minutes = (time.monotonic() - started) / 60
    for message in outcome.logging_errors:
        print(f"archsearch search: warning: {message}", file=sys.stderr)
    if outcome.interrupted:
        _progress(
            f"interrupted after {outcome.finished + outcome.failed + outcome.stopped} of "
            f"{outcome.trials} trials; "
            f"the search is saved in {outcome.experiment_path}. Continue it with:\n"
            f"  archsearch search {args.space} --resume{_resume_flags(args)}"
        )
        return 130
    print(format_front_table(outcome.front))
    if outcome.budget_ended:
        _progress(_budget_line(outcome, args.time_budget or spec.time_budget))
    _progress(
        f"{outcome.finished} trials finished, {outcome.failed} failed"
        f"{f' ({outcome.retried} retried after a lost node)' if outcome.retried else ''}"
        f"{_early(outcome)} in {minutes:.1f} min; "
        f"{len(outcome.front)} on the front, tagged archsearch.pareto=true in MLflow experiment "
        f"{outcome.name!r} ({outcome.tracking_uri}).\nNext: `archsearch pareto {outcome.name}`, "
        f"`archsearch ui`, `archsearch export RUN_ID --format onnx -o model.onnx`"
    )
    return 0


def _budget_line(outcome: SearchOutcome, seconds: float) -> str:
    """The one line saying the time budget, not the trial count, ended the search."""
    return (
        f"the time budget of {format_duration(seconds)} ended the search: "
        f"{outcome.finished + outcome.failed + outcome.stopped} of {outcome.trials} trials ran "
        f"({outcome.stopped} of them stopped early), {outcome.not_started} never started"
    )


def _early(outcome: SearchOutcome) -> str:
    """``, 3 stopped early, 2 of the finished infeasible`` (or nothing)."""
    parts = [f"{outcome.stopped} stopped early"] if outcome.stopped else []
    if outcome.infeasible:
        parts.append(f"{outcome.infeasible} of the finished infeasible")
    return "".join(f", {part}" for part in parts)


def _duration(text: str) -> float:
    """``--time-budget``: argparse turns the error into one line and exit code 2."""
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


_duration.__name__ = "--time-budget"  # argparse names the type in its message


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _resume_flags(args: argparse.Namespace) -> str:
    flags = f" --storage {args.storage}" if args.storage else ""
    if args.tracking_uri:
        flags += f" --tracking-uri {args.tracking_uri}"
    return flags
