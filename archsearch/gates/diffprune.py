"""Deterministic approximate binary gates with exact zeros (after Shulman 2020, DiffPrune)."""

from __future__ import annotations

import math

import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.gates import fused
from archsearch.gates.base import Gate
from archsearch.gates.registry import register_built_in
from archsearch.gates.shared import (
    GAMMA,
    SIGMOID_BOUND,
    ZETA,
    annealed,
    check_temperatures,
    keep_logit,
    stretch,
    stretch_slope,
)

#: logit(-gamma / (zeta - gamma)) = log(1/11): where the stretched sigmoid crosses zero
LOGIT_ZERO = math.log(-GAMMA / ZETA)


@register_built_in("diffprune")
class DiffPruneGate(Gate):
    """z = clamp((zeta - gamma) sigmoid(x / tau) + gamma, 0, 1), tau annealed toward 0.

    The transform is OUR INTERPRETATION of Shulman (2020): the paper's exact transform could
    not be read (docs/gates.md says so), so this is the hard-concrete stretch applied to a
    deterministic sigmoid. Stretching gives exact zeros (and ones) with a gradient everywhere
    in between; annealing tau from ``tau0`` to ``tau_min`` narrows the fractional band so
    gates end approximately binary while staying differentiable. ``stochastic`` (the default)
    adds N(0, sigma^2) to x in training (sigma is in x's units, compare it with tau): without
    it, units park just above the cut with a sliver of z that hardening keeps whole, and a
    2% budget ended at 3.2% (docs/gates.md, "Departure: stochastic by default").

    Init: x = tau0 * logit(1 - init_drop_rate), the hard concrete gate's init scaled by the
    temperature, so the sigmoid starts at 1 - init_drop_rate. A keep probability of
    1 - init_drop_rate would put x at the zero point x0 for the default 0.5, a dead start
    (z = 0 with zero gradient); this init starts every gate inside (0, 1) with a gradient.
    """

    #: lambda factors without a target (``Gate.unit_lambda_scale``), fitted on the trained
    #: LeNet-300-100 (benchmarks/RESULTS.md, "One lambda across gates, every gate scaled")
    unit_lambda_scale = 1.1
    weight_lambda_scale = 0.8

    def __init__(
        self,
        n: int,
        *,
        init_drop_rate: float = 0.5,
        stochastic: bool = True,
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

    def fused_masked_weight(
        self, weight: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x
        if self.stochastic and self.sigma > 0:
            noise = torch.randn(self.n, device=x.device, dtype=x.dtype)
            sigma = x.new_tensor(self.sigma)
            return fused.masked_weight(_FUSED_NOISY, weight, x, self.tau, noise, sigma)
        return fused.masked_weight(_FUSED, weight, x, self.tau)

    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """sigmoid((x - x0) / tau): a smooth stand-in for 1[z > 0] = 1[x > x0]."""
        cached = self.fused_keep(scores)
        if cached is not None:
            return cached
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


def _z(x: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``DiffPruneGate._z``, the sigmoid behind it and exp(-x / tau), which also gives the
    keep probability: sigmoid(x / tau - LOGIT_ZERO) = 1 / (1 + exp(-x / tau) exp(LOGIT_ZERO))."""
    e = torch.exp(-(x / tau).clamp(-SIGMOID_BOUND, SIGMOID_BOUND))  # no denormal e
    s = 1.0 / (1.0 + e)
    return torch.where(x > tau * LOGIT_ZERO, stretch(s), torch.zeros_like(s)), s, e


def _grads(
    grad: torch.Tensor,
    grad_keep: torch.Tensor,
    weight: torch.Tensor,
    inputs: tuple[torch.Tensor, torch.Tensor],
    kept: tuple[torch.Tensor, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight's and x's gradients. ``inputs``: the noisy x~ and tau; ``kept``: the
    forward's sigmoid of x~ and the keep probability (z is 0 at and below x0)."""
    (noisy, tau), (s, keep) = inputs, kept
    open_ = noisy > tau * LOGIT_ZERO
    zero = torch.zeros_like(s)
    z = torch.where(open_, stretch(s), zero).view_as(grad)
    slope = torch.where(open_, stretch_slope(s), zero)
    grad_x = ((grad * weight).flatten() * slope + grad_keep * keep * (1.0 - keep)) / tau
    return grad * z, grad_x


def _forward(
    weight: torch.Tensor, x: torch.Tensor, noisy: torch.Tensor, tau: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    z, s, e = _z(noisy, tau)
    if noisy is not x:  # the keep probability is of the noiseless x
        e = torch.exp(-(x / tau).clamp(-SIGMOID_BOUND, SIGMOID_BOUND))
    keep = 1.0 / (1.0 + e * math.exp(LOGIT_ZERO))
    return weight * z.view_as(weight), keep, s, keep


@fused.formula
def _masked(weight: torch.Tensor, x: torch.Tensor, tau: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The weight times z, and the keep probability; keeps the sigmoid for the backward."""
    return _forward(weight, x, x, tau)


@fused.formula
def _masked_backward(
    grad: torch.Tensor,
    grad_keep: torch.Tensor,
    weight: torch.Tensor,
    x: torch.Tensor,
    tau: torch.Tensor,
    s: torch.Tensor,
    keep: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, None]:
    return (*_grads(grad, grad_keep, weight, (x, tau), (s, keep)), None)


@fused.formula
def _masked_noisy(
    weight: torch.Tensor,
    x: torch.Tensor,
    tau: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Stochastic mode: x~ = x + sigma * N(0, 1), the N(0, 1) draw given."""
    return _forward(weight, x, x + sigma * noise, tau)


@fused.formula
def _masked_noisy_backward(
    grad: torch.Tensor,
    grad_keep: torch.Tensor,
    weight: torch.Tensor,
    x: torch.Tensor,
    tau: torch.Tensor,
    noise: torch.Tensor,
    sigma: torch.Tensor,
    s: torch.Tensor,
    keep: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
    inputs = (x + sigma * noise, tau)
    return (*_grads(grad, grad_keep, weight, inputs, (s, keep)), None, None, None)


_FUSED = (_masked, _masked_backward)
_FUSED_NOISY = (_masked_noisy, _masked_noisy_backward)
