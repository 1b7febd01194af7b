"""Reference point for the gates: global magnitude pruning to a FLOPs ratio, with fine-tuning.

Usage: python benchmarks/magnitude_baseline.py [--model lenet_300_100] [--ratios 0.02 0.05 0.2]
       [--epochs 10] [--finetune-epochs 2] [--structured] [--json OUT]
Trains the dense model once, then for each ratio keeps the largest-magnitude weights of all
Conv2d/Linear layers (one global threshold) until the kept multiply-accumulates reach that
fraction of the dense count, fine-tunes with the pruned weights held at zero, and reports test
accuracy and fvcore FLOPs scaled by each layer's density (the convention of weight-granularity
gates). On an MLP a weight costs one multiply-accumulate, so the FLOPs ratio is the share of
weights kept; in a convolution a weight costs one per output position, which the threshold
accounts for. `benchmarks/gate_targets.py` compares every gate with these figures.

``--structured``: Torch-Pruning's magnitude pruning instead, removing whole hidden units
(output channels) with the smallest L2 norm, the same share in every layer (a global ranking
empties the narrower layers first: 22% test accuracy at 5% FLOPs), the input and the classifier
kept, to the largest model at or under each FLOPs ratio; the model is physically smaller and
its FLOPs are fvcore's count of it. ``--json OUT`` appends the rows to OUT as one baseline,
the form `benchmarks/search_efficiency.py table --baselines` reads.
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archsearch.config import TrialConfig
from archsearch.data import DataSplits
from archsearch.models import create_model
from archsearch.pruning.flops import count_flops
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import layer_geometry
from archsearch.train import TrainingRun, evaluate, finetune, pretrain
from archsearch.trial import load_data


def prune_to_flops(
    model: nn.Module, ratio: float, input_shape: tuple[int, ...]
) -> dict[str, float]:
    """Zero the smallest weights, globally, keeping ``ratio`` of the dense multiply-accumulates;
    returns each layer's weight density."""
    geometry = layer_geometry(model, input_shape)
    layers = dict(model.named_modules())
    magnitudes, costs = [], []
    for name, g in geometry.items():
        weight = layers[name].weight.detach().abs().flatten()
        magnitudes.append(weight)
        costs.append(torch.full_like(weight, float(g.positions)))
    magnitude, cost = torch.cat(magnitudes), torch.cat(costs)
    order = torch.argsort(magnitude, descending=True)
    kept_cost = torch.cumsum(cost[order], 0)
    budget = ratio * float(cost.sum())
    keep_count = max(1, int((kept_cost <= budget).sum()))
    threshold = magnitude[order[keep_count - 1]]
    densities = {}
    with torch.no_grad():
        for name in geometry:
            weight = layers[name].weight
            weight.mul_(weight.abs() >= threshold)
            densities[name] = float((weight != 0).float().mean())
    return densities


def prune_units_to_flops(
    model: nn.Module, ratio: float, input_shape: tuple[int, ...], steps: int = 20
) -> nn.Module:
    """The largest Torch-Pruning magnitude-pruned copy of ``model`` whose FLOPs are at most
    ``ratio`` of the dense count: a bisection on the share of units removed."""
    import torch_pruning as tp

    example = torch.zeros(1, *input_shape)
    dense_flops = count_flops(model.eval(), input_shape).total
    last = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]
    low, high, best = 0.0, 0.999, None
    for _ in range(steps):
        share = (low + high) / 2
        candidate = copy.deepcopy(model)
        pruner = tp.pruner.MagnitudePruner(
            candidate,
            example,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=share,
            ignored_layers=[dict(candidate.named_modules())[_name_of(model, last)]],
        )
        pruner.step()
        if count_flops(candidate.eval(), input_shape).total <= ratio * dense_flops:
            best, high = candidate, share
        else:
            low = share
    if best is None:
        raise ValueError(f"no structured pruning reaches {ratio:g} of the dense FLOPs")
    return best


def _name_of(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def dense_training(config: TrialConfig, data: DataSplits) -> tuple[nn.Module, TrainingRun]:
    """The dense model after ``config.pretrain_epochs`` epochs, and the run that trained it."""
    torch.manual_seed(config.seed)
    model = create_model(config.model, data.input_shape, data.num_classes)
    run = TrainingRun(config, data, torch.Generator().manual_seed(config.seed))
    pretrain(GatedModel(model, [], "hard_concrete"), run)
    return model, run


def magnitude_rows(
    model_name: str,
    ratios: list[float],
    *,
    epochs: int = 10,
    finetune_epochs: int = 2,
    data: DataSplits | None = None,
    structured: bool = False,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per FLOPs ratio: test accuracy of the pruned, fine-tuned model and its FLOPs
    (validation accuracy too, so a search's table can choose among them the same way).
    ``seed`` sets the dense network's start, the batch order and the validation split, as a
    trial's seed does: the baseline's spread across seeds is the yardstick for how far a
    search's figure may fall short of it by chance."""
    config = TrialConfig(
        model=model_name,
        data="fashion_mnist",
        pretrain_epochs=epochs,
        finetune_epochs=finetune_epochs,
        seed=seed,
    )
    data = data or load_data(config)
    shape = data.input_shape
    dense, run = dense_training(config, data)
    dense_flops = count_flops(dense, shape).total
    rows = [
        {
            "model": model_name,
            "ratio": 1.0,
            "flops_ratio": 1.0,
            "val_accuracy": evaluate(dense, data.val_x, data.val_y),
            "test_accuracy": evaluate(dense, data.test_x, data.test_y),
        }
    ]
    for ratio in ratios:
        if structured:
            model, densities = prune_units_to_flops(dense, ratio, shape), None
        else:
            model = copy.deepcopy(dense)
            densities = prune_to_flops(model, ratio, shape)
        finetune(model, replace(run, generator=torch.Generator().manual_seed(config.seed)))
        flops = count_flops(model.eval(), shape, densities=densities).total
        rows.append(
            {
                "model": model_name,
                "ratio": ratio,
                "flops_ratio": flops / dense_flops,
                "val_accuracy": evaluate(model, data.val_x, data.val_y),
                "test_accuracy": evaluate(model, data.test_x, data.test_y),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="lenet_300_100")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.05])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--structured", action="store_true", help="whole units, Torch-Pruning")
    parser.add_argument("--json", type=Path, help="append the rows to this file as a baseline")
    parser.add_argument("--seed", type=int, default=0, help="the dense network's and the data's")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows = magnitude_rows(
        args.model,
        args.ratios,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        structured=args.structured,
        seed=args.seed,
    )
    if args.json:
        kind = "structured (Torch-Pruning, L2)" if args.structured else "global"
        label = f"magnitude, {kind}, {args.epochs} + {args.finetune_epochs} epochs"
        if args.seed:
            label += f", seed {args.seed}"
        baselines = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.write_text(json.dumps([*baselines, {"label": label, "rows": rows}]) + "\n")
    print("| model | FLOPs ratio asked | FLOPs % of dense | test acc |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['ratio']:g} | {100 * row['flops_ratio']:.2f} "
            f"| {row['test_accuracy']:.4f} |"
        )


if __name__ == "__main__":
    main()
