"""Seconds of every epoch of a whole gated phase (LeNet-300-100 by default), denormals kept or
flushed.

Usage: python benchmarks/long_trial_epochs.py [--epochs 10] [--denormals keep,flush]
       [--gates hard_concrete,arm] [--granularities weight,neuron] [--out F.json]
       [--model lenet5_caffe --granularities weight,channel]

``epoch_overhead.py`` times the first epoch of a fresh network, so it never sees what a
trial's later epochs pay: as training goes on, values fall into float32's denormal range
(Adam's first moment of a weight whose gradient stays 0 decays by 0.9 a step), and on an x86
CPU every operation on them is many times slower. This runs each configuration's whole gated
phase (the bundled space's 10 epochs by default, from scratch, lambda 1) and the plain loop
for as many epochs, in one process, one configuration after the other. ``keep`` replaces
``archsearch.train.flush_denormals`` with a no-op (the code before it); ``flush`` is the code
as it ships. The table gives each configuration's epochs, its mean epoch over the plain
loop's mean epoch of the same setting, and the validation accuracy and hard FLOPs ratio its
gated phase ended at (equal across settings when flushing moves no figure).
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from dataclasses import replace

import torch

from archsearch import train
from archsearch.config import TrialConfig
from archsearch.gates import list_gates
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry
from archsearch.trial import load_data

SHAPE = (1, 28, 28)
SHIPPED_FLUSH = train.flush_denormals


def _run(config: TrialConfig, seed: int = 0) -> train.TrainingRun:
    return train.TrainingRun(config, load_data(config), torch.Generator().manual_seed(seed))


def plain_epochs(config: TrialConfig) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(config.model, SHAPE, 10)
    gated = GatedModel(model, [], "hard_concrete")
    return train.pretrain(gated, _run(replace(config, pretrain_epochs=config.epochs)))


def gated_epochs(config: TrialConfig, gate: str, granularity: str) -> list[dict]:
    torch.manual_seed(0)
    model = create_model(config.model, SHAPE, 10)
    groups = find_groups(model, SHAPE, granularity)
    gated = GatedModel(model, groups, gate)
    cost = CostModel(layer_geometry(model, SHAPE), groups)
    return train.train_gated(gated, cost, _run(config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--model", default="lenet_300_100", help="a bundled 28 x 28 model")
    parser.add_argument("--denormals", default="keep,flush")
    parser.add_argument("--gates", default=",".join(list_gates()))
    parser.add_argument("--granularities", default="weight,neuron")
    parser.add_argument("--out", help="write the epochs' records here as JSON")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows = []
    for setting in args.denormals.split(","):
        torch.set_flush_denormal(False)  # a process starts with them kept
        train.flush_denormals = SHIPPED_FLUSH if setting == "flush" else (lambda: None)
        config = TrialConfig(
            model=args.model, data="fashion_mnist", epochs=args.epochs, penalty_lambda=1.0
        )
        plain = [r["seconds"] for r in plain_epochs(config)]
        rows.append({"denormals": setting, "gate": "(plain)", "granularity": "", "s": plain})
        print(f"{setting} plain: " + " ".join(f"{s:.2f}" for s in plain), flush=True)
        for gate in args.gates.split(","):
            for granularity in args.granularities.split(","):
                history = gated_epochs(config, gate, granularity)
                seconds = [r["seconds"] for r in history]
                rows.append(
                    {
                        "denormals": setting,
                        "gate": gate,
                        "granularity": granularity,
                        "s": seconds,
                        "over_plain": statistics.mean(seconds) / statistics.mean(plain),
                        "val_accuracy": history[-1]["val_accuracy"],
                        "hard_ratio": history[-1]["hard_cost_ratio"],
                    }
                )
                print(
                    f"{setting} {gate} {granularity}: " + " ".join(f"{s:.2f}" for s in seconds),
                    flush=True,
                )
    print("\n| denormals | gate | granularity | epochs (s) | mean / plain | val acc | hard % |")
    print("|---|---|---|---|---:|---:|---:|")
    for row in rows:
        epochs = " ".join(f"{s:.2f}" for s in row["s"])
        if row["gate"] == "(plain)":
            print(f"| {row['denormals']} | (plain) | | {epochs} | 1.00 | | |")
            continue
        print(
            f"| {row['denormals']} | {row['gate']} | {row['granularity']} | {epochs} | "
            f"{row['over_plain']:.2f} | {row['val_accuracy']:.4f} | "
            f"{100 * row['hard_ratio']:.2f} |"
        )
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
