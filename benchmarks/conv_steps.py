"""A convolutional network's training step: channels-last weights and folded channel masks.

Usage: OMP_NUM_THREADS=1 python benchmarks/conv_steps.py [--model lenet5_caffe]
       [--granularities plain,channel,channel+neuron,weight] [--steps 10] [--rounds 4]

Milliseconds per step of the real steps (``train._gated_step``; the plain row is the dense
warm-up's and fine-tuning's step), one batch of 128, one thread, denormals flushed, for each
combination of:
- the weights' order: the usual (NCHW) or channels-last, as ``memory_format.
  channels_last_on_cpu`` trains them on a CPU;
- the channel masks on the layers' outputs (the forward hooks) or folded into their weights
  (``pruning.weight_folds``, where a forward chooses it). Turned off on one gated model by
  handing it an empty choice: that model runs the output products a trial ran before.
"NCHW, not folded" is the step as trials ran it before both; "channels-last, folded" is
today's. Every variant runs ``--steps`` steps per round, the variants interleaved, and the
best round is kept, so a slower minute on the machine moves all of them alike.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

from archsearch import train
from archsearch.config import TrialConfig
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry

SHAPES = {"lenet5_caffe": (1, 28, 28), "resnet20": (3, 32, 32)}
BATCH = 128
WARM_UP = 3


def make_step(
    model_name: str, kind: str, channels_last: bool, fold: bool, gate: str
) -> Callable[[], None]:
    shape = SHAPES[model_name]
    torch.manual_seed(0)
    model = create_model(model_name, shape, 10)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    x, y = torch.randn(BATCH, *shape), torch.randint(0, 10, (BATCH,))
    if kind == "plain":
        optimizer = train._adam([{"params": list(model.parameters()), "lr": 1e-3}])

        def plain_step() -> None:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        return plain_step
    groups = find_groups(model, shape, kind)
    gated = GatedModel(model, groups, gate).train()
    if not fold:
        gated._folds.choose = lambda batch: frozenset()
    cost = CostModel(layer_geometry(model, shape), groups)
    config = TrialConfig(gate=gate, granularity=kind)
    optimizer = train._adam(
        [
            {"params": list(model.parameters()), "lr": config.lr},
            {"params": gated.gate_parameters(), "lr": config.gate_lr},
        ]
    )
    return lambda: train._gated_step(gated, cost, config, optimizer, (x, y), 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(SHAPES), default="lenet5_caffe")
    parser.add_argument(
        "--granularities",
        type=lambda s: s.split(","),
        default=["plain", "channel", "channel+neuron", "weight"],
    )
    parser.add_argument("--gate", default="hard_concrete")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    train.flush_denormals()
    variants = {}
    for kind in args.granularities:
        folds = (False,) if kind in ("plain", "weight") else (False, True)
        for channels_last in (False, True):
            for fold in folds:
                step = make_step(args.model, kind, channels_last, fold, args.gate)
                variants[(kind, channels_last, fold)] = step
    for step in variants.values():
        for _ in range(WARM_UP):
            step()
    best = dict.fromkeys(variants, float("inf"))
    for _ in range(args.rounds):
        for key, step in variants.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            best[key] = min(best[key], 1e3 * (time.perf_counter() - started) / args.steps)
    print(f"| {args.model} | order | channel masks | ms a step | x the NCHW step |")
    print("|---|---|---|---:|---:|")
    for (kind, channels_last, fold), ms in best.items():
        before = best[(kind, False, False)]
        order = "channels-last" if channels_last else "NCHW"
        masks = "-" if kind in ("plain", "weight") else ("folded" if fold else "on outputs")
        print(f"| {kind} | {order} | {masks} | {ms:.1f} | {before / ms:.2f}x faster |")


if __name__ == "__main__":
    main()
