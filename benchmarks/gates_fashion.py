"""Every gate x {weight, neuron} on LeNet-300-100 / Fashion-MNIST: accuracy, FLOPs, seconds.

Usage: python benchmarks/gates_fashion.py [--cells gate:granularity:lambda ...] [--out FILE]
Each cell is one `run_trial` (10 gated epochs + 2 fine-tuning by default), the same function
`archsearch train` runs. Results go to a JSON file and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from archsearch.config import TrialConfig
from archsearch.trial import load_data, run_trial

#: lambda per cell, chosen by a hand sweep (RESULTS.md lists the values tried)
DEFAULT_CELLS = [
    "hard_concrete:weight:2",
    "hard_concrete:neuron:1",
    "arm:weight:100",
    "arm:neuron:2",
    "gumbel_softmax:weight:2",
    "gumbel_softmax:neuron:0.1",
    "trainable_gate:weight:2",
    "trainable_gate:neuron:0.2",
    "learned_threshold:weight:2",
    "learned_threshold:neuron:2",
    "diffprune:weight:2",
    "diffprune:neuron:2",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cells", nargs="*", default=DEFAULT_CELLS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--gate-lr", type=float, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/gates_fashion.json"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    base = {
        "model": "lenet_300_100",
        "data": "fashion_mnist",
        "epochs": args.epochs,
        "finetune_epochs": args.finetune_epochs,
    }
    if args.gate_lr:
        base["gate_lr"] = args.gate_lr
    data = load_data(TrialConfig(**base))
    rows = json.loads(args.out.read_text()) if args.out.exists() else {}
    for cell in args.cells:
        gate, granularity, penalty_lambda = cell.split(":")
        config = TrialConfig(
            **base, gate=gate, granularity=granularity, penalty_lambda=float(penalty_lambda)
        )
        result = run_trial(config, data=data)
        m = result.metrics
        rows[f"{gate}:{granularity}"] = {
            "gate": gate,
            "granularity": granularity,
            "lambda": config.penalty_lambda,
            "gate_lr": config.gate_lr,
            "val_accuracy": m["val_accuracy"],
            "test_accuracy": m["test_accuracy"],
            "flops_ratio": m["flops_ratio"],
            "flops": m["flops"],
            "train_seconds": m["train_seconds"],
            "architecture": result.subnetwork["architecture"],
            "degenerate": m["degenerate"],
        }
        print(json.dumps(rows[f"{gate}:{granularity}"]), flush=True)
        args.out.write_text(json.dumps(rows, indent=1))
    print_table(rows)


def print_table(rows: dict) -> None:
    print(
        "| gate | granularity | lambda | val acc | test acc | FLOPs % of dense | kept | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows.values():
        print(
            f"| {r['gate']} | {r['granularity']} | {r['lambda']} | {r['val_accuracy']:.4f} | "
            f"{r['test_accuracy']:.4f} | {100 * r['flops_ratio']:.2f} | {r['architecture']} | "
            f"{r['train_seconds']:.0f} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
