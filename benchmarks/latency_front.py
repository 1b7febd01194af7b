"""The {val_accuracy, latency} front next to the {val_accuracy, flops} front of the same budget.

Usage: python benchmarks/latency_front.py [--budget 8m] [--epochs 3] [--concurrency 2]

Two real searches (local Ray, Optuna TPE seed 0, an MLflow SQLite store in a temporary
folder) of LeNet-300-100 on Fashion-MNIST, the same space and the same time budget, one
optimising counted FLOPs and one the latency each trial measured (onnxruntime, 1 thread, batch
1, as a ratio to the dense network). For each: its front (chosen on validation accuracy), which
granularities it picks, and the yardstick hypervolume (test accuracy of the chosen points) in
both the FLOPs and the latency plane.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from archsearch import api
from archsearch.hypervolume import front_hypervolume

SPACE = {
    "gate": ["hard_concrete", "trainable_gate", "diffprune", "learned_threshold"],
    "granularity": ["weight", "neuron"],
    "penalty.lambda": {"loguniform": [0.05, 5.0]},
}
PLANES = {
    "FLOPs": {"val_accuracy": "max", "flops": "min"},
    "latency": {"val_accuracy": "max", "latency": "min"},
}


def run(cost: str, folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One search optimising ``cost``; its front rows."""
    name = f"front-{cost}"
    spec = api.search_spec(
        name,
        model="lenet_300_100",
        data="fashion_mnist",
        space=SPACE,
        train={"epochs": args.epochs, "finetune_epochs": 1, "gate_lr": 0.01},
        trials=200,  # the budget ends it
        concurrency=args.concurrency,
        sampler="tpe",
        seed=0,
        objectives=["val_accuracy", cost],
        time_budget=args.budget,
    )
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    outcome = api.run(spec, tracking_uri=uri, storage=str(folder / "ray"), on_progress=print)
    print(f"{name}: {outcome.finished} finished, {outcome.stopped} stopped")
    return api.front(name, uri)


def describe(cost: str, front: list[dict[str, Any]]) -> list[str]:
    on_test = [{**row, "val_accuracy": row["test_accuracy"]} for row in front]
    volumes = ", ".join(
        f"{plane} plane {front_hypervolume(on_test, objectives):.3f}"
        for plane, objectives in PLANES.items()
    )
    picks = Counter(row["granularity"] for row in front)
    lines = [
        f"### searched on {cost}: {len(front)} front members "
        f"({', '.join(f'{n} {g}' for g, n in sorted(picks.items()))}); "
        f"hypervolume (test accuracy): {volumes}",
        "",
        "| gate | granularity | kept | FLOPs % | latency % b1 | val acc | test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(front, key=lambda r: r["latency_ratio"]):
        lines.append(
            f"| {row['gate']} | {row['granularity']} | {row['architecture']} "
            f"| {100 * row['flops_ratio']:.2f} | {100 * row['latency_ratio']:.1f} "
            f"| {row['val_accuracy']:.4f} | {row['test_accuracy']:.4f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="8m")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the MLflow store and Ray state here")
    parser.add_argument("--costs", nargs="+", default=["flops", "latency"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    report = []
    with tempfile.TemporaryDirectory(prefix="archsearch-latency-front-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for cost in args.costs:
            report += [*describe(cost, run(cost, folder, args)), ""]
    print("\n".join(report))


if __name__ == "__main__":
    main()
