"""Small operations per training step of gated LeNet-300-100, against the plain network.

Usage: python benchmarks/step_ops.py [--granularities neuron,neuron+inputs,weight]

At neuron granularity a gated step's extra arithmetic is tiny (a few hundred gates next to a
128 x 784 x 300 product), yet on a CPU it cost 1.4-2x a plain step: each small operation costs
microseconds of dispatch whatever its size, forward and backward. This counts the ATen
operations one whole step dispatches (forward, backward, optimizer; a ``TorchDispatchMode``
sees each, nested ones included) for every gate, on one random batch of 128, so a change that
removes operations shows as a number that does not depend on the machine's load. Weight
granularity is counted with the fused gate math off (the mode cannot see inside compiled
code). Seconds are ``epoch_overhead.py``'s job.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from archsearch import train
from archsearch.config import TrialConfig
from archsearch.gates import fused, list_gates
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry

SHAPE = (1, 28, 28)


class _Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(128, *SHAPE, generator=generator), torch.randint(0, 10, (128,))


def gated_step(gate: str, granularity: str):
    """One training step of the real gated loop (``train._gated_step``), ready to call."""
    torch.manual_seed(0)
    model = create_model("lenet_300_100", SHAPE, 10)
    kind, _, inputs = granularity.partition("+")
    groups = find_groups(model, SHAPE, kind, gate_inputs=inputs == "inputs")
    config = TrialConfig(gate=gate, granularity=kind, penalty_lambda=1.0)
    gated = GatedModel(model, groups, gate)
    cost = CostModel(layer_geometry(model, SHAPE), groups)
    gated.calibrate()
    optimizer = train._adam(
        [
            train._weights(list(gated.base.parameters()), config, config.lr),
            {"params": gated.gate_parameters(), "lr": config.gate_lr * gated.gate_lr_scale},
        ]
    )
    gated.train()
    batch = _batch()

    def step() -> None:
        gated.set_progress(0.5)
        train._gated_step(gated, cost, config, optimizer, batch, 0.5)

    return step


def plain_step():
    """One step of the plain loop's arithmetic (forward, cross-entropy, backward, AdamW)."""
    torch.manual_seed(0)
    model = create_model("lenet_300_100", SHAPE, 10)
    config = TrialConfig()
    optimizer = train._adam([train._weights(list(model.parameters()), config, config.lr)])
    x, y = _batch()

    def step() -> None:
        _, loss = train._classification_loss(model(x), y, 0.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def count(step) -> int:
    for _ in range(3):  # warm: lazy state (optimizer moments, calibration) settles
        step()
    with _Count() as counter:
        step()
    return counter.calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--granularities", default="neuron,neuron+inputs,weight")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    fused.set_mode("off")
    torch.set_num_threads(1)
    granularities = args.granularities.split(",")
    print(f"plain step: {count(plain_step())} operations")
    print("| gate | " + " | ".join(granularities) + " |")
    print("|---|" + "---:|" * len(granularities))
    for gate in list_gates():
        cells = [str(count(gated_step(gate, g))) for g in granularities]
        print(f"| {gate} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
