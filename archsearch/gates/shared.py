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


@torch.no_grad()
def logistic_noise(like: torch.Tensor) -> torch.Tensor:
    """Logistic(0, 1) noise shaped like ``like``: logit(u), u ~ U(eps, 1 - eps).

    It is the noise of the binary concrete (log u - log(1 - u)) and, as the difference of two
    Gumbel(0, 1) draws, the noise of a two-way Gumbel-Softmax. One ``logit`` is several times
    cheaper than the two ``log`` passes (``log1p`` is slower still on CPU) it replaces, which
    matters at weight granularity, where a gate has one noise value per weight.
    """
    u = torch.empty_like(like).uniform_(EPS, 1.0 - EPS)
    return u.logit_()


def stretch(s: torch.Tensor) -> torch.Tensor:
    """clamp(s * (zeta - gamma) + gamma, 0, 1): stretching a value in (0, 1) past both ends
    and clamping puts exact zeros and ones in reach, with a gradient everywhere in between."""
    return torch.clamp(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


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
