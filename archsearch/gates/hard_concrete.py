"""Hard concrete L0 gates (Louizos, Welling, Kingma 2018): the baseline every method faces."""

from __future__ import annotations

import math

import torch
from torch import nn

from archsearch.gates import fused
from archsearch.gates.base import Gate
from archsearch.gates.registry import register_built_in
from archsearch.gates.shared import (
    GAMMA,
    ZETA,
    keep_logit,
    logistic_noise,
    stretch,
    stretch_slope,
    uniform_noise,
)

BETA = 2.0 / 3.0
#: the authors' range for log_alpha; beyond it gates are decided and gradients only drift
LOG_ALPHA_MIN = math.log(1e-2)
LOG_ALPHA_MAX = math.log(1e2)
INIT_STD = 1e-2
#: keep_probability = sigmoid(log_alpha - KEEP_SHIFT)
KEEP_SHIFT = BETA * math.log(-GAMMA / ZETA)


@register_built_in("hard_concrete")
class HardConcreteGate(Gate):
    """Stretched, clamped binary concrete gates.

    Stretching to (gamma, zeta) and clamping to [0, 1] puts real probability mass on exact
    zeros and ones while the sample stays a differentiable function of ``log_alpha``; that is
    what lets the L0 norm be trained by the reparameterisation trick.
    """

    #: lambda factors without a target (``Gate.unit_lambda_scale``), fitted on the trained
    #: LeNet-300-100 (benchmarks/RESULTS.md, "One lambda across gates, every gate scaled")
    unit_lambda_scale = 0.7
    weight_lambda_scale = 2.2

    def __init__(self, n: int, *, init_drop_rate: float = 0.5) -> None:
        super().__init__(n)
        mean = keep_logit("hard_concrete", init_drop_rate)
        self.log_alpha = nn.Parameter(torch.randn(n) * INIT_STD + mean)

    def sample(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        # One u per group per call: the same gate value for every example of the minibatch.
        return stretch(torch.sigmoid((logistic_noise(self.log_alpha) + self.log_alpha) / BETA))

    def fused_masked_weight(
        self, weight: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return fused.masked_weight(_FUSED, weight, uniform_noise(self.log_alpha), self.log_alpha)

    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """P(z > 0): the probability that the stretched sample clears the clamp at zero."""
        cached = self.fused_keep(scores)
        if cached is not None:
            return cached
        return torch.sigmoid(self.log_alpha - KEEP_SHIFT)

    def hard_mask(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        return self._z_hat() > 0

    def test_scale(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """The authors' test-time estimator is fractional; hardening folds it into the weights."""
        return self._z_hat()

    def after_optimizer_step(self) -> None:
        with torch.no_grad():
            self.log_alpha.clamp_(LOG_ALPHA_MIN, LOG_ALPHA_MAX)

    def _z_hat(self) -> torch.Tensor:
        return stretch(torch.sigmoid(self.log_alpha))


@fused.formula
def _masked(
    weight: torch.Tensor, u: torch.Tensor, log_alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``sample``'s z from the uniform draw u, times the weight, and the keep probability,
    in one pass; keeps the sample's sigmoid for the backward.

    The same two sigmoids with one exp between them and no log: with e = exp(-log_alpha)
    and q = e (1 - u) / u, sigmoid((logit(u) + log_alpha) / beta) = 1 / (1 + q^(1/beta)),
    q^(1/beta) = q sqrt(q) for beta = 2/3, and sigmoid(log_alpha - shift) =
    1 / (1 + exp(shift) e). Transcendentals are what this loop spends its time on (the
    equality with the formulas is tested)."""
    e = torch.exp(-log_alpha)
    q = e * (1.0 - u) / u
    s = 1.0 / (1.0 + q * torch.sqrt(q))
    keep = 1.0 / (1.0 + math.exp(KEEP_SHIFT) * e)
    return weight * stretch(s).view_as(weight), keep, s, keep


@fused.formula
def _masked_backward(
    grad: torch.Tensor,
    grad_keep: torch.Tensor,
    weight: torch.Tensor,
    u: torch.Tensor,
    log_alpha: torch.Tensor,
    s: torch.Tensor,
    keep: torch.Tensor,
) -> tuple[torch.Tensor, None, torch.Tensor]:
    grad_z = (grad * weight).flatten()
    grad_log_alpha = grad_z * stretch_slope(s) / BETA + grad_keep * keep * (1.0 - keep)
    return grad * stretch(s).view_as(grad), None, grad_log_alpha


_FUSED = (_masked, _masked_backward)
