"""Learning-rate schedules of the weights, per training phase (warm-up, gated, fine-tuning).

Each phase runs its own schedule over its own steps, so a phase of 2 epochs and one of 20 end
at the same point of it: a cosine phase ends near a zero rate, where a constant rate leaves
the weights still moving when the phase stops (the fine-tuning that ships them most of all).
The gate parameters keep their constant rate: their temperatures and penalty ramps already
run on the gated phase's progress, and a vanishing gate rate would freeze decisions early.
Pure functions of the phase's progress; a linear warm-up may precede any schedule.
"""

from __future__ import annotations

import math
from collections.abc import Callable

#: step: the rate falls tenfold at these shares of the phase
STEP_MILESTONES = (0.5, 0.75)


def _constant(progress: float) -> float:
    return 1.0


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _step(progress: float) -> float:
    return 0.1 ** sum(progress >= milestone for milestone in STEP_MILESTONES)


#: the schedules a trial may use: progress through the phase (0 to 1) -> share of the rate
SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "step": _step,
}


def lr_factor(name: str, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """The share of the base rate at ``step`` (0-based) of a phase of ``total_steps``: a
    linear ramp over the first ``warmup_steps``, then ``name``'s curve over the rest."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    remaining = max(1, total_steps - warmup_steps - 1)
    return SCHEDULES[name](min(1.0, (step - warmup_steps) / remaining))
