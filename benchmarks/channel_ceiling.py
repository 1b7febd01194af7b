"""How accurate can a LeNet-5-Caffe with channels alone be at 10% of the FLOPs?

Usage: python benchmarks/channel_ceiling.py [--workers 2] [--epochs 10 22]
       [--out benchmarks/channel_ceiling.json]

Issue 15 asks a channel-granularity point >= 90.0% test at <= 10% of LeNet-5-Caffe's FLOPs on
Fashion-MNIST; five 90-minute searches of `lenet5_fashion.yaml` ended at 89.6-89.9% there.
`channel` gates the convolutions only, so such a subnetwork keeps the 500-unit fully connected
layer, and 10% of the FLOPs leaves a 4-11 or 5-9 pair of convolutions. This trains those
shapes (and, for comparison, shapes `channel+neuron` can reach, and the dense network) from a
fresh initialisation with the file's own dense schedule (`train.train_dense`: `epochs` plain
epochs, then `finetune_epochs`; one cell per shape and epoch count, one thread each), and
prints their FLOPs (fvcore, as a search counts them) and test accuracy. A shape that cannot
reach 90% trained on its own says how much of the target a search's pruning must add.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_targets import _start_worker  # one thread a cell, warnings off

OUT = Path(__file__).resolve().parent / "channel_ceiling.json"
SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "lenet5_fashion.yaml"

#: (first convolution's channels, second's, fully connected units): the channel subnetworks a
#: 10% budget allows (the 500 units kept), channel+neuron shapes under the same budget, and
#: the dense network
SHAPES = (
    (4, 11, 500),
    (5, 9, 500),
    (6, 7, 500),
    (6, 12, 100),
    (5, 16, 60),
    (20, 50, 500),
)


def lenet5_of(widths: tuple[int, int, int], num_classes: int = 10) -> Any:
    """LeNet-5-Caffe on 28x28 inputs with the given widths, initialised as the model registry
    initialises the full one."""
    from torch import nn

    from archsearch.models import _init_conv

    first, second, units = widths
    model = nn.Sequential(
        nn.Conv2d(1, first, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(first, second, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * second, units), nn.ReLU(),
        nn.Linear(units, num_classes),
    )  # fmt: skip
    return _init_conv(model)


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    import dataclasses

    import torch

    from archsearch.pruning.flops import count_flops
    from archsearch.space import load_spec
    from archsearch.train import TrainingRun, accuracy, flush_denormals, train_dense
    from archsearch.trial import load_data

    flush_denormals()
    config = dataclasses.replace(load_spec(SPACE).base, epochs=cell["epochs"])
    data = load_data(config)
    torch.manual_seed(config.seed)
    model = lenet5_of(tuple(cell["widths"]), data.num_classes)
    train_dense(model, TrainingRun(config, data, torch.Generator().manual_seed(config.seed)))
    return {
        **cell,
        "flops": count_flops(model.eval(), data.input_shape).total,
        "val_accuracy": accuracy(model, data, "val"),
        "test_accuracy": accuracy(model, data, "test"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--epochs", type=int, nargs="+", default=[10, 22], help="epochs before fine-tuning"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cells = [{"widths": list(w), "epochs": e} for e in args.epochs for w in SHAPES]
    context = get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context, initializer=_start_worker) as pool:
        rows = list(pool.map(run_cell, cells))
    dense = next(r["flops"] for r in rows if tuple(r["widths"]) == SHAPES[-1])
    for row in rows:
        row["flops_ratio"] = row["flops"] / dense
    print("\n".join(map(describe, rows)))
    args.out.write_text(json.dumps(rows, indent=1) + "\n")


def describe(row: dict[str, Any]) -> str:
    shape = "-".join(map(str, row["widths"]))
    return (
        f"{shape:>10s}  {row['epochs']:>2d} + 2 epochs  FLOPs {100 * row['flops_ratio']:6.2f}%  "
        f"val {row['val_accuracy']:.4f}  test {row['test_accuracy']:.4f}"
    )


if __name__ == "__main__":
    main()
