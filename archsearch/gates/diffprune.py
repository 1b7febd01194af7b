"""Deterministic approximate binary gates with exact zeros (after Shulman 2020, DiffPrune)."""

from __future__ import annotations

import math

import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.gates.base import Gate
from archsearch.gates.registry import register_gate
from archsearch.gates.shared import (
    GAMMA,
    ZETA,
    annealed,
    check_temperatures,
    keep_logit,
    stretch,
)

#: logit(-gamma / (zeta - gamma)) = log(1/11): where the stretched sigmoid crosses zero
LOGIT_ZERO = math.log(-GAMMA / ZETA)


@register_gate(
    "diffprune",
    description="DiffPrune-style gates (after Shulman 2020): annealed stretched sigmoid, exact 0s",
    stochastic=False,
    estimator="deterministic",
    fractional_scale=True,
)
class DiffPruneGate(Gate):
    """z = clamp((zeta - gamma) sigmoid(x / tau) + gamma, 0, 1), tau annealed toward 0.

    The transform is OUR INTERPRETATION of Shulman (2020): the paper's exact transform could
    not be read (docs/gates.md says so), so this is the hard-concrete stretch applied to a
    deterministic sigmoid. Stretching gives exact zeros (and ones) with a gradient everywhere
    in between; annealing tau from ``tau0`` to ``tau_min`` narrows the fractional band so
    gates end approximately binary while staying differentiable. ``stochastic=True`` adds
    N(0, sigma^2) to x in training (sigma is in x's units, compare it with tau).

    Init: x = tau0 * logit(1 - init_drop_rate), the hard concrete gate's init scaled by the
    temperature, so the sigmoid starts at 1 - init_drop_rate. A keep probability of
    1 - init_drop_rate would put x at the zero point x0 for the default 0.5, a dead start
    (z = 0 with zero gradient); this init starts every gate inside (0, 1) with a gradient.
    """

    def __init__(
        self,
        n: int,
        *,
        init_drop_rate: float = 0.5,
        stochastic: bool = False,
        sigma: float = 0.1,
        tau0: float = 1.0,
        tau_min: float = 0.05,
    ) -> None:
        super().__init__(n)
        init = float(tau0) * keep_logit("diffprune", init_drop_rate)
        check_temperatures("diffprune", tau0, tau_min)
        if sigma < 0:
            raise ConfigError(f"diffprune sigma must be >= 0, got {sigma}")
        self.stochastic = bool(stochastic)
        self.sigma = float(sigma)
        self.tau0 = float(tau0)
        self.tau_min = float(tau_min)
        self.x = nn.Parameter(torch.full((n,), init))
        self.register_buffer("tau", torch.tensor(self.tau0))

    def sample(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        x = self.x
        if self.stochastic and self.sigma > 0:
            x = x + self.sigma * torch.randn(self.n, device=x.device, dtype=x.dtype)
        return self._z(x)

    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """sigmoid((x - x0) / tau): a smooth stand-in for 1[z > 0] = 1[x > x0]."""
        return torch.sigmoid(self.x / self.tau - LOGIT_ZERO)

    def hard_mask(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        return self._z(self.x) > 0

    def test_scale(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Fractional gates are folded into the kept weights when hardening."""
        return self._z(self.x)

    def set_progress(self, progress: float) -> None:
        self.tau.fill_(annealed(self.tau0, self.tau_min, progress))

    def _z(self, x: torch.Tensor) -> torch.Tensor:
        z = stretch(torch.sigmoid(x / self.tau))
        # Rounding could leave a sliver above 0 at x0 itself; the documented cut is exact.
        return torch.where(x > self.tau * LOGIT_ZERO, z, torch.zeros_like(z))
