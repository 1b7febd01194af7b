"""Hard concrete L0 gates (Louizos, Welling, Kingma 2018): the baseline every method faces."""

from __future__ import annotations

import math

import torch
from torch import nn

from archsearch.gates.base import Gate
from archsearch.gates.registry import register_gate
from archsearch.gates.shared import GAMMA, ZETA, keep_logit, logistic_noise, stretch

BETA = 2.0 / 3.0
#: the authors' range for log_alpha; beyond it gates are decided and gradients only drift
LOG_ALPHA_MIN = math.log(1e-2)
LOG_ALPHA_MAX = math.log(1e2)
INIT_STD = 1e-2


@register_gate(
    "hard_concrete",
    description="L0 hard concrete gates (Louizos et al. 2018), reparameterised; the baseline",
    stochastic=True,
    estimator="reparameterisation",
    fractional_scale=True,
)
class HardConcreteGate(Gate):
    """Stretched, clamped binary concrete gates.

    Stretching to (gamma, zeta) and clamping to [0, 1] puts real probability mass on exact
    zeros and ones while the sample stays a differentiable function of ``log_alpha``; that is
    what lets the L0 norm be trained by the reparameterisation trick.
    """

    def __init__(self, n: int, *, init_drop_rate: float = 0.5) -> None:
        super().__init__(n)
        mean = keep_logit("hard_concrete", init_drop_rate)
        self.log_alpha = nn.Parameter(torch.randn(n) * INIT_STD + mean)

    def sample(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        # One u per group per call: the same gate value for every example of the minibatch.
        return stretch(torch.sigmoid((logistic_noise(self.log_alpha) + self.log_alpha) / BETA))

    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """P(z > 0): the probability that the stretched sample clears the clamp at zero."""
        return torch.sigmoid(self.log_alpha - BETA * math.log(-GAMMA / ZETA))

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
