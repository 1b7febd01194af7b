"""Where a gated training step's time goes: milliseconds per section of the real step.

Usage: python benchmarks/step_breakdown.py [--steps 400] [--gates hard_concrete,arm]
       [--granularities weight,neuron,neuron+inputs]

``epoch_overhead.py`` gives one ratio per gate; this splits the step behind it, so a target
can be compared with what the step cannot avoid. It runs ``archsearch.train._gated_step``
itself, with the calls it makes wrapped by timers: the gated forward, the antithetic forward
(ARM), ``loss.backward()``, the optimizer's step and ``after_optimizer_step``; "rest" is the
step's time minus these (the loss, the penalty's forward, ``add_two_pass_gradient``). The
plain row is the dense warm-up's step (forward, loss, backward, AdamW) on the same batch.
LeNet-300-100 on one Fashion-MNIST batch of 128, one thread, denormals flushed as in
training; the first 30 steps warm up (and compile) and are not counted.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from archsearch import train
from archsearch.config import TrialConfig
from archsearch.gates import list_gates
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry
from archsearch.trial import load_data

SHAPE = (1, 28, 28)
WARM_UP = 30
SECTIONS = ("forward", "antithetic", "backward", "optimizer", "after step", "rest")


class Timers:
    """Seconds per named section, from wrapped callables."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.on = False

    def wrap(self, name: Callable[[], str] | str, function: Callable[..., Any]) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                if self.on:
                    key = name() if callable(name) else name
                    self.seconds[key] += time.perf_counter() - started

        return timed


def gated_row(gate: str, granularity: str, batch: tuple, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model("lenet_300_100", SHAPE, 10)
    kind, _, inputs = granularity.partition("+")
    groups = find_groups(model, SHAPE, kind, gate_inputs=inputs == "inputs")
    gated = GatedModel(model, groups, gate)
    cost = CostModel(layer_geometry(model, SHAPE), groups)
    config = TrialConfig(gate=gate, granularity=kind)
    gated.calibrate()
    optimizer = train._adam(
        [
            {"params": list(gated.base.parameters()), "lr": config.lr},
            {"params": gated.gate_parameters(), "lr": config.gate_lr * gated.gate_lr_scale},
        ]
    )
    timers = Timers()
    pass_name = lambda: "antithetic" if gated._antithetic_pass else "forward"  # noqa: E731
    gated.forward = timers.wrap(pass_name, gated.forward)
    optimizer.step = timers.wrap("optimizer", optimizer.step)
    gated.after_optimizer_step = timers.wrap("after step", gated.after_optimizer_step)
    backward = torch.Tensor.backward
    torch.Tensor.backward = timers.wrap("backward", backward)
    try:
        total = _timed_steps(
            lambda: train._gated_step(gated, cost, config, optimizer, batch, 0.5), timers, steps
        )
    finally:
        torch.Tensor.backward = backward
    return _per_step(timers, total, steps)


def plain_row(batch: tuple, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = create_model("lenet_300_100", SHAPE, 10)
    optimizer = train._adam([{"params": list(model.parameters()), "lr": 1e-3}])
    timers = Timers()
    model.forward = timers.wrap("forward", model.forward)
    optimizer.step = timers.wrap("optimizer", optimizer.step)
    xb, yb = batch

    def step() -> None:
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        started = time.perf_counter()
        loss.backward()
        if timers.on:
            timers.seconds["backward"] += time.perf_counter() - started
        optimizer.step()

    total = _timed_steps(step, timers, steps)
    return _per_step(timers, total, steps)


def _timed_steps(step: Callable[[], Any], timers: Timers, steps: int) -> float:
    for _ in range(WARM_UP):
        step()
    timers.on = True
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started


def _per_step(timers: Timers, total: float, steps: int) -> dict[str, float]:
    row = {name: 1e3 * timers.seconds.get(name, 0.0) / steps for name in SECTIONS[:-1]}
    row["rest"] = 1e3 * total / steps - sum(row.values())
    row["step"] = 1e3 * total / steps
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--gates", type=lambda s: s.split(","), default=list_gates())
    parser.add_argument(
        "--granularities", type=lambda s: s.split(","), default=["weight", "neuron"]
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    train.flush_denormals()
    data = load_data(TrialConfig(model="lenet_300_100", data="fashion_mnist"))
    batch = (data.train_x[:128].reshape(-1, *SHAPE), data.train_y[:128])
    plain = plain_row(batch, args.steps)
    print(f"| gate | granularity | {' | '.join(SECTIONS)} | step | x plain |")
    print(f"|---|---|{'---:|' * (len(SECTIONS) + 2)}")
    rows = [("plain", "-", plain)] + [
        (gate, granularity, gated_row(gate, granularity, batch, args.steps))
        for granularity in args.granularities
        for gate in args.gates
    ]
    for gate, granularity, row in rows:
        cells = " | ".join(f"{row[name]:.3f}" for name in SECTIONS)
        ratio = row["step"] / plain["step"]
        print(f"| {gate} | {granularity} | {cells} | {row['step']:.3f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
