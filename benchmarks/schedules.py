"""Which learning-rate schedule should a trial default to? Constant against cosine, same trials.

Usage: python benchmarks/schedules.py [--schedules constant cosine] [--workers 2]
       [--out benchmarks/schedules.json]

Each cell is one `run_trial` on LeNet-300-100 / Fashion-MNIST with `penalty.target` = 5%
(lambda 1, the default 10 gated + 2 fine-tuning epochs, seed 0): `trainable_gate` at neuron
granularity with gated inputs (the structured point the issue asked for) and `hard_concrete`
at weight granularity, once per schedule. Prints hardened FLOPs % and test accuracy per cell;
cells run in `--workers` processes of one thread each.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "schedules.json"
CELLS = (
    {"gate": "trainable_gate", "granularity": "neuron", "gate_inputs": True},
    {"gate": "hard_concrete", "granularity": "weight", "gate_inputs": False},
)


def _start_worker() -> None:
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    from archsearch.config import TrialConfig
    from archsearch.trial import run_trial

    config = TrialConfig(
        model="lenet_300_100",
        data="fashion_mnist",
        penalty_lambda=1.0,
        penalty_target=0.05,
        latency_runtime="off",
        **cell,
    )
    started = time.perf_counter()
    result = run_trial(config)
    return {
        **cell,
        "flops_ratio": result.metrics["flops_ratio"],
        "val_accuracy": result.metrics["val_accuracy"],
        "test_accuracy": result.metrics["test_accuracy"],
        "architecture": result.subnetwork["architecture"],
        "seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", nargs="+", default=["constant", "cosine"])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cells = [{**cell, "lr_schedule": s} for cell in CELLS for s in args.schedules]
    context = get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context, initializer=_start_worker) as pool:
        rows = list(pool.map(run_cell, cells))
    args.out.write_text(json.dumps(rows, indent=1))
    print("| gate | granularity | schedule | kept | FLOPs % | val acc | test acc | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['gate']} | {r['granularity']}{' + inputs' if r['gate_inputs'] else ''} "
            f"| {r['lr_schedule']} | {r['architecture']} | {100 * r['flops_ratio']:.2f} "
            f"| {r['val_accuracy']:.4f} | {r['test_accuracy']:.4f} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
