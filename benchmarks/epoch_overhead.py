"""Seconds per training epoch of each gated LeNet-300-100 over the same model without gates.

Usage: python benchmarks/epoch_overhead.py [--rounds 5] [--threads 1] [--modes off,compile]
       [--gates hard_concrete,arm] [--granularities weight,neuron]
       python benchmarks/epoch_overhead.py --compile-cost

Both sides run the real training loops of archsearch.train on Fashion-MNIST (54,000
examples, batch 128): the gated one with its penalty (and ARM's antithetic pass), the plain
one as the dense warm-up. On a machine shared with other work, seconds drift from minute to
minute, so the two sides are measured in pairs: each round runs, for every configuration, one
plain epoch and then one gated epoch. A configuration's ratio is the median over rounds of
its gated epoch over the plain epoch just before it, its seconds its best gated epoch (round
1 is left out of both: it warms up, and compiles). Every epoch is the first of a fresh
network, so each round times the same work. Every ratio of a table comes from the same run.

``--granularities`` takes ``neuron+inputs`` too: neurons with the input features gated, as
the bundled MLP spaces search them (``gate_inputs``).

``--modes`` names how weight-granularity gates do their per-element math
(``archsearch.gates.fused``): ``off`` is the eager formulas (the code before the fused
path), ``compile`` the fused, compiled formulas. Neuron granularity never takes the fused
path, so its rows are measured once (mode ``-``). ``first s`` is a configuration's first
gated epoch: in compile mode it includes compiling the gate's formulas (the process's first
compilation also imports the compiler).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from dataclasses import dataclass, field

import torch

from archsearch.config import TrialConfig
from archsearch.gates import create_gate, fused, list_gates
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry
from archsearch.train import TrainingRun, pretrain, train_gated
from archsearch.trial import load_data

SHAPE = (1, 28, 28)


@dataclass
class Setting:
    """One gated configuration and the seconds of its epochs so far."""

    gate: str
    granularity: str
    mode: str
    gated_seconds: list[float] = field(default_factory=list)
    plain_seconds: list[float] = field(default_factory=list)


def one_epoch(data, config: TrialConfig, seed: int) -> TrainingRun:
    return TrainingRun(config, data, torch.Generator().manual_seed(seed))


def plain_epoch(data, config: TrialConfig, seed: int) -> float:
    """The first epoch of a fresh network without gates (the dense warm-up loop)."""
    torch.manual_seed(seed)
    plain = GatedModel(create_model("lenet_300_100", SHAPE, 10), [], "hard_concrete")
    return pretrain(plain, one_epoch(data, config, seed))[0]["seconds"]


def gated_epoch(entry: Setting, data, config: TrialConfig, seed: int) -> float:
    """The first gated epoch of a fresh network, so every round times the same work: a
    network trained on across rounds drifts (denormal floats appear as training goes on).
    Compilation, if any, happens in the first step of the configuration's first epoch."""
    fused.set_mode("off" if entry.mode == "-" else entry.mode)
    torch.manual_seed(seed)
    model = create_model("lenet_300_100", SHAPE, 10)
    granularity, _, inputs = entry.granularity.partition("+")
    groups = find_groups(model, SHAPE, granularity, gate_inputs=inputs == "inputs")
    gated = GatedModel(model, groups, entry.gate)
    cost = CostModel(layer_geometry(model, SHAPE), groups)
    return train_gated(gated, cost, one_epoch(data, config, seed))[0]["seconds"]


def settings(args: argparse.Namespace) -> list[Setting]:
    chosen = []
    for gate in args.gates:
        for granularity in args.granularities:
            modes = args.modes if granularity == "weight" else ["-"]
            chosen += [Setting(gate, granularity, mode) for mode in modes]
    return chosen


def report(entries: list[Setting], rounds: int, threads: int) -> None:
    """Rounds 2..N (round 1 warms up, and compiles in compile mode; its gated epoch is the
    ``first s`` column): a row's seconds are its best gated epoch, its ratio the median over
    rounds of its gated epoch over the plain epoch run just before it. Each pair shares the
    machine's load of its minute, which a ratio of two bests taken minutes apart does not."""
    timed = slice(1, None) if rounds > 1 else slice(None)
    plains = [s for e in entries for s in e.plain_seconds[timed]]
    print(
        f"\nplain epochs: best {min(plains):.2f} s, median {statistics.median(plains):.2f} s, "
        f"worst {max(plains):.2f} s; {rounds} rounds, rounds 2-{rounds} timed; threads={threads}"
    )
    print("| gate | granularity | mode | s / epoch | × plain | first s |")
    print("|---|---|---|---|---|---|")
    for e in entries:
        pairs = zip(e.gated_seconds[timed], e.plain_seconds[timed], strict=True)
        ratio = statistics.median(gated / plain for gated, plain in pairs)
        print(
            f"| {e.gate} | {e.granularity} | {e.mode} | {min(e.gated_seconds[timed]):.2f} | "
            f"{ratio:.2f} | {e.gated_seconds[0]:.2f} |"
        )


def compile_cost() -> None:
    """Seconds the first fused step of each gate costs over its second, in this process, on
    LeNet-300-100's first layer: compiling its formulas (the first gate also imports the
    compiler). Run it with a fresh ``TORCHINDUCTOR_CACHE_DIR`` for a cold cache."""
    fused.set_mode("compile")
    costs = []
    for name in list_gates():
        torch.manual_seed(0)
        weight = torch.randn(300, 784, requires_grad=True)
        gate = create_gate(name, weight.numel()).train()
        seconds = []
        for _ in range(2):
            started = time.perf_counter()
            scores = weight.pow(2).flatten() if gate.needs_scores else None
            masked = gate.masked_weight(weight, scores)
            (masked.sum() + gate.keep_probability(scores).sum()).backward()
            if gate.two_pass:
                gate.begin_antithetic()
                with torch.no_grad():
                    gate.masked_weight(weight, scores)
                gate.end_antithetic()
                gate.add_two_pass_gradient(0.0, 1.0)
            seconds.append(time.perf_counter() - started)
        costs.append((name, seconds[0] - seconds[1]))
    print("; ".join(f"{name} {cost:.1f} s" for name, cost in costs))
    print(f"all six: {sum(cost for _, cost in costs):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", default="off,compile")
    parser.add_argument("--gates", default=",".join(list_gates()))
    parser.add_argument("--granularities", default="weight,neuron")
    parser.add_argument("--compile-cost", action="store_true", help="time compiling only")
    args = parser.parse_args()
    args.modes, args.gates = args.modes.split(","), args.gates.split(",")
    args.granularities = args.granularities.split(",")
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    if args.compile_cost:
        compile_cost()
        return
    torch.manual_seed(0)
    config = TrialConfig(
        model="lenet_300_100",
        data="fashion_mnist",
        epochs=1,
        pretrain_epochs=1,
        penalty_lambda=0.5,
    )
    data = load_data(config)
    entries = settings(args)
    for index in range(args.rounds):
        for entry in entries:
            entry.plain_seconds.append(plain_epoch(data, config, index))
            entry.gated_seconds.append(gated_epoch(entry, data, config, index))
            print(
                f"round {index + 1}: {entry.gate} {entry.granularity} {entry.mode}: "
                f"plain {entry.plain_seconds[-1]:.2f} s, gated {entry.gated_seconds[-1]:.2f} s",
                flush=True,
            )
    report(entries, args.rounds, args.threads)


if __name__ == "__main__":
    main()
