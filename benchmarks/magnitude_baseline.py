"""Reference point for the gates: global magnitude pruning of LeNet-300-100 with fine-tuning.

Usage: python benchmarks/magnitude_baseline.py [--keep 0.05] [--epochs 10] [--finetune-epochs 2]
Trains the dense model, keeps the largest `keep` fraction of all Linear weights (one global
threshold), fine-tunes with the pruned weights held at zero, and reports test accuracy and
fvcore FLOPs scaled by each layer's density (the same convention as weight-granularity gates).
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch import nn

from archsearch.config import TrialConfig
from archsearch.models import create_model
from archsearch.pruning.flops import count_flops
from archsearch.pruning.gated_model import GatedModel
from archsearch.train import TrainingRun, evaluate, finetune, pretrain
from archsearch.trial import load_data

SHAPE = (1, 28, 28)


def prune_globally(model: nn.Module, keep: float) -> dict[str, float]:
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    magnitudes = torch.cat([m.weight.detach().abs().flatten() for m in layers.values()])
    threshold = magnitudes.kthvalue(int(len(magnitudes) * (1 - keep))).values
    with torch.no_grad():
        for module in layers.values():
            module.weight.mul_(module.weight.abs() > threshold)
    return {n: float((m.weight != 0).float().mean()) for n, m in layers.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = TrialConfig(
        model="lenet_300_100",
        data="fashion_mnist",
        pretrain_epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
    )
    data = load_data(config)
    model = create_model("lenet_300_100", SHAPE, 10)
    run = TrainingRun(config, data, torch.Generator().manual_seed(0))
    pretrain(GatedModel(model, [], "hard_concrete"), run)
    dense_test = evaluate(model, data.test_x, data.test_y)
    dense_flops = count_flops(model, SHAPE).total
    densities = prune_globally(model, args.keep)
    finetune(model, run)
    flops = count_flops(model, SHAPE, densities=densities).total
    print(f"dense: test accuracy {dense_test:.4f}, FLOPs {dense_flops:,}")
    print(
        f"magnitude pruning to {100 * args.keep:.0f}% of weights + {args.finetune_epochs} "
        f"fine-tuning epochs: val {evaluate(model, data.val_x, data.val_y):.4f}, test "
        f"{evaluate(model, data.test_x, data.test_y):.4f}, FLOPs {flops:,} "
        f"({100 * flops / dense_flops:.2f}% of dense), densities "
        + ", ".join(f"{n} {100 * d:.1f}%" for n, d in densities.items())
    )


if __name__ == "__main__":
    main()
