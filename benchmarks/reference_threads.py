"""The dense reference's training time against the threads it is given.

Usage: python benchmarks/reference_threads.py [--space search_spaces/lenet300_fashion.yaml]
       [--threads 1 2] [--rounds 2]

Trains a space's dense reference (``trial.dense_reference``: its model, data and schedule, no
gates) with each thread count in turn, ``rounds`` times, in this process, and prints its
``train_seconds``. A search whose trials start from the reference waits for it with every
trial slot idle, so it runs on all of their CPUs (``search.reference.reference_cpus``); this
is the figure behind that choice. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from archsearch.space import load_spec
from archsearch.trial import dense_reference, load_data

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=REPO / "search_spaces/lenet300_fashion.yaml")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    config = load_spec(args.space).base
    data = load_data(config)
    seconds: dict[int, list[float]] = {threads: [] for threads in args.threads}
    for _ in range(args.rounds):
        for threads in args.threads:
            reference = dense_reference(config, data, threads=threads)
            seconds[threads].append(reference.metrics["train_seconds"])
            print(
                f"{threads} thread(s): {seconds[threads][-1]:.1f} s, "
                f"test {reference.metrics['test_accuracy']:.4f}",
                flush=True,
            )
    for threads, values in seconds.items():
        runs = ", ".join(f"{value:.1f}" for value in values)
        print(f"{threads} thread(s): best {min(values):.1f} s of {runs}")


if __name__ == "__main__":
    main()
