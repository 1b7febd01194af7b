"""Seconds per training epoch of each gated LeNet-300-100 over the same model without gates.

Usage: python benchmarks/epoch_overhead.py [--epochs 2] [--threads 1]
Both sides run the real training loops of archsearch.train on Fashion-MNIST (54,000
examples, batch 128): the gated one with its penalty (and ARM's antithetic pass), the plain
one as the dense warm-up. Each side's best epoch is compared, which damps noise from other
processes on the machine.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from archsearch.config import TrialConfig
from archsearch.gates import list_gates
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry
from archsearch.train import TrainingRun, pretrain, train_gated
from archsearch.trial import load_data

SHAPE = (1, 28, 28)


def best_epoch(history: list[dict]) -> float:
    return min(record["seconds"] for record in history)


def run_of(data, config: TrialConfig) -> TrainingRun:
    return TrainingRun(config, data, torch.Generator().manual_seed(0))


def plain_seconds(data, config: TrialConfig) -> float:
    model = create_model("lenet_300_100", SHAPE, 10)
    gated = GatedModel(model, [], "hard_concrete")
    return best_epoch(pretrain(gated, run_of(data, config)))


def gated_seconds(data, config: TrialConfig, gate: str, granularity: str) -> float:
    model = create_model("lenet_300_100", SHAPE, 10)
    groups = find_groups(model, SHAPE, granularity)
    gated = GatedModel(model, groups, gate)
    cost = CostModel(layer_geometry(model, SHAPE), groups)
    history = train_gated(gated, cost, run_of(data, config))
    return best_epoch(history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = TrialConfig(
        model="lenet_300_100",
        data="fashion_mnist",
        epochs=args.epochs,
        pretrain_epochs=args.epochs,
        penalty_lambda=0.5,
    )
    data = load_data(config)
    plain = plain_seconds(data, config)
    print(f"plain LeNet-300-100: {plain:.2f} s per epoch (threads={args.threads})")
    print("| gate | granularity | s / epoch | × plain |")
    print("|---|---|---|---|")
    for gate in list_gates():
        for granularity in ("weight", "neuron"):
            seconds = gated_seconds(data, config, gate, granularity)
            print(f"| {gate} | {granularity} | {seconds:.2f} | {seconds / plain:.2f} |", flush=True)


if __name__ == "__main__":
    main()
