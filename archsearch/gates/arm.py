"""L0-ARM gates (Li & Ji 2019): exactly binary gates with an unbiased, two-pass gradient."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.gates.base import Gate
from archsearch.gates.registry import register_gate
from archsearch.gates.shared import keep_logit

#: the public code's init spread, before dividing by k
INIT_STD = 1e-2
#: the hard-sigmoid variant's slope is k / HARD_SIGMOID_DIVISOR (the public code's 7)
HARD_SIGMOID_DIVISOR = 7.0
#: above this many gates in a model, lambda is scaled by (gates / this): see penalty_scale
REFERENCE_GROUPS = 1000


@register_gate(
    "arm",
    description="L0-ARM (Li & Ji 2019): binary gates, unbiased gradient from an antithetic pass",
    stochastic=True,
    estimator="arm",
)
class ArmGate(Gate):
    """Bernoulli gates z = 1[u < pi] whose gradient comes from Augment-Reinforce-Merge.

    The sample is exactly binary, so the data loss gives ``phi`` no autograd gradient; the
    training loop runs a second forward with the antithetic sample 1[u > 1 - pi] of the same
    ``u`` and hands both losses to ``add_two_pass_gradient``. The penalty, built on the
    differentiable ``keep_probability``, gets its gradient from autograd as usual.

    ``phi`` starts at logit(1 - init_drop_rate) / k plus N(0, 0.01 / k) noise, as in the
    public code, so gates at drop rate 0.5 do not all sit exactly on the eval threshold.

    Hard-sigmoid variant (pi = clamp(k phi / 7 + 1/2, 0, 1)): ARM estimates the gradient with
    respect to the Bernoulli logit alpha = logit(pi). We chain it through
    d alpha / d phi = (k / 7) / (pi (1 - pi)) so the estimate stays unbiased (an unbiased
    estimator is the method's point), and use 0 where pi is clamped to 0 or 1 (pi's derivative
    is 0 there and both passes see the same z). The public code instead reuses the sigmoid's
    factor k, which is biased for this variant.
    """

    two_pass = True
    #: measured: without it the keep probabilities of a weight-granularity layer stay near 1/2
    #: and the network trained on costs 3x the one shipped (docs/gates.md, "What each
    #: method adds to it")
    polarisation = 5.0

    def __init__(
        self, n: int, *, init_drop_rate: float = 0.5, k: float = 7.0, hard_sigmoid: bool = False
    ) -> None:
        super().__init__(n)
        logit = keep_logit("arm", init_drop_rate)
        if k <= 0:
            raise ConfigError(f"arm k must be positive, got {k}")
        self.k = float(k)
        self.hard_sigmoid = bool(hard_sigmoid)
        if self.hard_sigmoid:  # the phi whose pi is 1 - init_drop_rate
            start = (1.0 - init_drop_rate - 0.5) * HARD_SIGMOID_DIVISOR / self.k
        else:
            start = logit / self.k
        self.phi = nn.Parameter(torch.randn(n) * (INIT_STD / k) + start)
        self._u: torch.Tensor | None = None
        self._antithetic = False

    @classmethod
    def penalty_scale(cls, total_groups: int) -> float:
        """total_groups / 1000 above 1000 gates: the ARM estimate of each gate's data
        gradient is a whole minibatch's loss difference, noise of a fixed size per gate,
        while a normalised penalty gives each of n gates 1/n of its gradient. At weight
        granularity (266,200 gates on LeNet-300-100) lambda = 5 left every gate at its
        initial 50% (docs/gates.md, "What each method adds to it")."""
        return max(1.0, total_groups / REFERENCE_GROUPS)

    def _pi(self) -> torch.Tensor:
        if self.hard_sigmoid:
            return torch.clamp(self.k * self.phi / HARD_SIGMOID_DIVISOR + 0.5, 0.0, 1.0)
        return torch.sigmoid(self.k * self.phi)

    def sample(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        pi = self._pi().detach()
        if self._antithetic:
            return (self._stored_u() > 1.0 - pi).to(pi.dtype)
        self._u = torch.rand(self.n, device=pi.device, dtype=pi.dtype)
        return (self._u < pi).to(pi.dtype)

    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        return self._pi()

    def hard_mask(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        return self.phi > 0

    def begin_antithetic(self) -> None:
        self._stored_u()
        self._antithetic = True

    def end_antithetic(self) -> None:
        self._antithetic = False

    def add_two_pass_gradient(self, loss: float, antithetic_loss: float) -> None:
        """Add the ARM estimate; a plain add so it sums with the penalty's autograd gradient."""
        u = self._stored_u()
        grad = (float(antithetic_loss) - float(loss)) * (u - 0.5) * self._logit_slope()
        if self.phi.grad is None:
            self.phi.grad = grad.detach().clone()
        else:
            self.phi.grad.add_(grad)

    def _logit_slope(self) -> torch.Tensor:
        """d logit(pi) / d phi: k for the sigmoid; see the class docstring for hard sigmoid."""
        with torch.no_grad():
            if not self.hard_sigmoid:
                return torch.full_like(self.phi, self.k)
            pi = self._pi()
            inside = (pi > 0) & (pi < 1)
            slope = (self.k / HARD_SIGMOID_DIVISOR) / (pi * (1.0 - pi))
            return torch.where(inside, slope, torch.zeros_like(pi))

    def _stored_u(self) -> torch.Tensor:
        if self._u is None:
            raise RuntimeError("arm gate: run a training forward pass before the antithetic pass")
        return self._u
