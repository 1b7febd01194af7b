"""Noise shared by the stochastic gates."""

from __future__ import annotations

import torch

#: keeps logit(u) finite at the ends of the uniform draw
EPS = 1e-6


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
