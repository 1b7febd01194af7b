"""Pieces several gate methods share, so each formula is written once: logistic noise, the
hard concrete stretch, the initial keep logit and the exponential temperature schedule
(docs/gates.md has the formulas in context)."""

from __future__ import annotations

import math

import torch

from archsearch.errors import ConfigError

#: keeps logit(u) finite at the ends of the uniform draw
EPS = 1e-6
#: the stretch interval (gamma, zeta) of the hard concrete distribution (Louizos et al. 2018)
GAMMA = -0.1
ZETA = 1.1
#: sigmoid arguments past this many units saturate: sigmoid(-60) < 1e-26, sigmoid(60) is 1.0
#: in float32 (from 17 on); see ``bounded_sigmoid``
SIGMOID_BOUND = 60.0


@torch.no_grad()
def logistic_noise(like: torch.Tensor) -> torch.Tensor:
    """Logistic(0, 1) noise shaped like ``like``: logit(u), u ~ U(eps, 1 - eps).

    It is the noise of the binary concrete (log u - log(1 - u)) and, as the difference of two
    Gumbel(0, 1) draws, the noise of a two-way Gumbel-Softmax. One ``logit`` is several times
    cheaper than the two ``log`` passes (``log1p`` is slower still on CPU) it replaces, which
    matters at weight granularity, where a gate has one noise value per weight.
    """
    return uniform_noise(like).logit_()


@torch.no_grad()
def uniform_noise(like: torch.Tensor) -> torch.Tensor:
    """u ~ U(eps, 1 - eps) shaped like ``like``: the draw behind ``logistic_noise``. The fused
    gate math (``archsearch.gates.fused``) takes u itself and computes logit(u) in its loop,
    so from the same random state it sees the very noise the eager formula sees."""
    return torch.empty_like(like).uniform_(EPS, 1.0 - EPS)


def stretch(s: torch.Tensor) -> torch.Tensor:
    """clamp(s * (zeta - gamma) + gamma, 0, 1): stretching a value in (0, 1) past both ends
    and clamping puts exact zeros and ones in reach, with a gradient everywhere in between."""
    return torch.clamp(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def stretch_slope(s: torch.Tensor) -> torch.Tensor:
    """d stretch(sigmoid(a)) / da at s = sigmoid(a): (zeta - gamma) s (1 - s) where the clamp
    lets the value through (bounds included, as autograd's clamp does), else 0. The fused
    backward of the stretched gates."""
    pre = s * (ZETA - GAMMA) + GAMMA
    inside = (pre >= 0.0) & (pre <= 1.0)
    return torch.where(inside, (ZETA - GAMMA) * s * (1.0 - s), torch.zeros_like(s))


def bounded_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """sigmoid(x) that never makes a denormal float: exactly 0 below -SIGMOID_BOUND (where
    the sigmoid is under 1e-26) and the argument capped at +SIGMOID_BOUND (where it is
    already 1.0). A soft mask at a small temperature sends many arguments far out; the
    denormals sigmoid makes there (and the masked weights and activations made from them)
    slow every later operation on an x86 CPU: a learned-threshold epoch of LeNet-300-100 at
    weight granularity took 18.9 s before this cut and 7.3 s after (benchmarks/RESULTS.md,
    "Fused gate math")."""
    inside = torch.sigmoid(x.clamp(max=SIGMOID_BOUND))
    return torch.where(x > -SIGMOID_BOUND, inside, torch.zeros_like(inside))


def keep_logit(gate: str, init_drop_rate: float) -> float:
    """logit(1 - init_drop_rate), the logit that starts a group kept with probability
    1 - init_drop_rate; a rate outside (0, 1) is a ConfigError naming ``gate``."""
    if not 0.0 < init_drop_rate < 1.0:
        raise ConfigError(f"{gate} init_drop_rate must be in (0, 1), got {init_drop_rate}")
    return math.log((1.0 - init_drop_rate) / init_drop_rate)


def check_temperatures(gate: str, tau0: float, tau_min: float) -> None:
    """An annealed temperature must start positive and not rise."""
    if not 0.0 < tau_min <= tau0:
        raise ConfigError(f"{gate} needs 0 < tau_min <= tau0, got {tau_min} and {tau0}")


def annealed(start: float, end: float, progress: float) -> float:
    """start * (end / start) ** progress: exponential from ``start`` at progress 0 to ``end``
    at progress 1 (progress is clamped to [0, 1])."""
    progress = min(max(float(progress), 0.0), 1.0)
    return start * (end / start) ** progress
