"""Per-trial orchestration overhead of a search, and which steps it goes to.

Usage: python benchmarks/search_overhead.py [--trials 16] [--concurrency 2] [--epochs 3]
       python benchmarks/search_overhead.py --space search_spaces/lenet300_fashion.yaml --trials 32

Runs a real search (local Ray, Optuna TPE, an MLflow SQLite store in a temporary folder) of
LeNet-300-100 trials on Fashion-MNIST sized to take ~20 s each, then reports

    overhead per trial = (search wall time × concurrency − Σ trial compute) / trials

where a trial's compute is the wall time of its trial function inside the Ray worker
(``trial_seconds``: data from the worker's cache, training, hardening, FLOPs, files). With
``--space`` it runs that space file instead (``--trials`` and ``--concurrency`` override it)
and also reports the end-to-end time beyond the trials' compute at ``c`` slots, ``wall −
(Σ trial compute + the dense reference's training × the CPUs it holds) / c`` (issue 11's
target: within 15 s). The phases are timed from the search's own progress lines: start-up
(Ray, MLflow, Optuna) until the first trial is logged, and the end (front models in MLflow's
PyTorch flavour, dashboard).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import warnings
from pathlib import Path

import mlflow

from archsearch.pruning.flops import count_flops
from archsearch.search import run_search
from archsearch.space import load_spec

SPACE = """
name: overhead-bench
model: {{name: lenet_300_100}}
data: {{name: fashion_mnist, val_fraction: 0.1}}
objectives: {{val_accuracy: max, flops: min}}
trials: {trials}
concurrency: {concurrency}
sampler: {{name: tpe, seed: 0}}
resources: {{cpu: 1, gpu: 0}}
train: {{epochs: {epochs}, finetune_epochs: 1, batch_size: 128, lr: 1e-3, gate_lr: 1e-2}}
space:
  gate: [hard_concrete, trainable_gate, diffprune]
  granularity: [neuron]
  penalty.lambda: {{loguniform: [0.1, 2]}}
"""


#: the search's line that says how many CPUs its dense reference holds
REFERENCE_CPUS = re.compile(r"training the dense reference \(.*?; ([0-9.]+) CPU /")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--space", type=Path, default=None, help="a space file to run instead")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="archsearch-overhead-") as tmp:
        folder = Path(tmp)
        space = folder / "space.yaml"
        space.write_text(args.space.read_text() if args.space else SPACE.format(**vars(args)))
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        lines: list[tuple[float, str]] = []

        def progress(line: str) -> None:
            lines.append((time.perf_counter(), line))
            print(line, flush=True)

        started = time.perf_counter()
        outcome = run_search(
            load_spec(space),
            trials=args.trials,
            concurrency=args.concurrency,
            tracking_uri=uri,
            storage=str(folder / "ray"),
            on_progress=progress,
        )
        wall = time.perf_counter() - started
        report(outcome, uri, wall, started, lines, args)


def report(outcome, uri: str, wall: float, started: float, lines, args) -> None:
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name(outcome.name).experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'",
    )
    trial_seconds = [r.data.metrics["trial_seconds"] for r in runs]
    train_seconds = [r.data.metrics["train_seconds"] for r in runs]
    overhead = (wall * args.concurrency - sum(trial_seconds)) / len(runs)
    reference = client.get_run(outcome.parent_run_id).data.metrics.get("reference.train_seconds")
    # the reference holds the CPUs it asked for (one trial's, or every slot's when the trials
    # wait for it): its slot-seconds are compute, a slot left idle beside it is not
    reference_cpus = next(
        (float(m.group(1)) for _, line in lines if (m := REFERENCE_CPUS.search(line))), 1.0
    )
    compute = (sum(trial_seconds) + (reference or 0.0) * reference_cpus) / args.concurrency
    first_logged = next(t for t, line in lines if line.lstrip().startswith("["))
    last_logged = [t for t, line in lines if line.lstrip().startswith("[")][-1]
    print(f"\ntrials logged: {len(runs)} ({outcome.finished} finished, {outcome.failed} failed)")
    print(f"search wall time: {wall:.1f} s at concurrency {args.concurrency}")
    print(
        f"trial compute: mean {sum(trial_seconds) / len(runs):.1f} s "
        f"(of which training {sum(train_seconds) / len(runs):.1f} s)"
    )
    print(f"overhead per trial: {overhead:.2f} s")
    print(
        f"end to end beyond the compute at {args.concurrency} slots: {wall - compute:.1f} s "
        f"(wall {wall:.1f} s; compute {compute:.1f} s = (sum of trial_seconds "
        f"{sum(trial_seconds):.0f} s + dense reference "
        f"{'none' if reference is None else f'{reference:.0f} s x {reference_cpus:g} CPU'})"
        f" / {args.concurrency})"
    )
    print(
        f"start-up until the first trial was logged: {first_logged - started:.1f} s "
        f"(includes that trial's {trial_seconds[-1]:.0f}-ish s of compute)"
    )
    print(
        f"end of search after the last trial was logged: {started + wall - last_logged:.1f} s "
        f"({len(outcome.front)} front models in MLflow's PyTorch flavour + dashboard)"
    )
    fixed = (first_logged - started - trial_seconds_of_first(runs)) + (started + wall - last_logged)
    print(
        f"fixed part: start-up beyond the first trial's compute + end = {fixed:.1f} s, i.e. "
        f"{fixed * args.concurrency / len(runs):.2f} s of the overhead per trial; the rest, "
        f"{overhead - fixed * args.concurrency / len(runs):.2f} s, is per-trial scheduling "
        "and logging"
    )
    print("fixed costs, timed on their own:")
    for name, seconds in fixed_costs(args.concurrency).items():
        print(f"  {name}: {seconds:.2f} s")
    print(
        f"  fvcore FLOPs count of one LeNet-300-100 (per trial, inside it): {flops_seconds():.3f} s"
    )


def trial_seconds_of_first(runs) -> float:
    first = min(runs, key=lambda r: r.info.end_time)
    return first.data.metrics["trial_seconds"]


def fixed_costs(concurrency: int) -> dict[str, float]:
    import ray

    from archsearch.config import TrialConfig
    from archsearch.tracking import SearchTracker
    from archsearch.trial import load_data

    costs = {}
    start = time.perf_counter()
    ray.init(address="local", num_cpus=concurrency, include_dashboard=False, log_to_driver=False)
    costs["ray.init (local, then shutdown)"] = time.perf_counter() - start
    ray.shutdown()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        SearchTracker("fixed-costs", tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        costs["MLflow: new SQLite store + experiment + parent run"] = time.perf_counter() - start
        start = time.perf_counter()
        SearchTracker("fixed-costs-2", tracking_uri=f"sqlite:///{tmp}/mlflow.db")
        costs["MLflow: existing store, new experiment + parent run"] = time.perf_counter() - start
    start = time.perf_counter()
    load_data(TrialConfig(model="lenet_300_100", data="fashion_mnist"))
    costs["Fashion-MNIST load (driver check; again once per worker)"] = time.perf_counter() - start
    return costs


def flops_seconds() -> float:
    from archsearch.models import create_model

    model = create_model("lenet_300_100", (1, 28, 28), 10)
    start = time.perf_counter()
    count_flops(model, (1, 28, 28))
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
