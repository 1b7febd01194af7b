"""L0-ARM gates (Li & Ji 2019): exactly binary gates with an unbiased, two-pass gradient."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.gates import fused
from archsearch.gates.base import Gate
from archsearch.gates.registry import register_built_in
from archsearch.gates.shared import keep_logit

#: the public code's init spread, before dividing by k
INIT_STD = 1e-2
#: the hard-sigmoid variant's slope is k / HARD_SIGMOID_DIVISOR (the public code's 7)
HARD_SIGMOID_DIVISOR = 7.0
#: above this many gates in a model, lambda is scaled by (gates / this): see penalty_scale
REFERENCE_GROUPS = 1000


@register_built_in("arm")
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

    #: No lambda factor of its own (``Gate.unit_lambda_scale``): the trained LeNet-300-100
    #: wanted 2.2 on neurons and 9 on weights, while on the tests' digits MLP, where its
    #: neurons already close to 1% of the FLOPs at lambda 1, a factor of 9 took its weights
    #: from 19% to 0.05%. How far ARM's penalty moves it against its estimator's noise depends
    #: on the model (benchmarks/RESULTS.md, "One lambda across gates, every gate scaled");
    #: search ``penalty.target`` for trials comparable across methods.

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
        #: pi when ``sample`` drew ``_u``, for the antithetic pass of the same step
        self._pi_at_u: torch.Tensor | None = None
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
        if self._antithetic:  # phi has not moved since the pass that drew u
            pi = self._pi_at_u if self._pi_at_u is not None else self._pi().detach()
            return (self._stored_u() > 1.0 - pi).to(pi.dtype)
        pi = self._pi()
        if pi.requires_grad:  # the step's keep probability: held once (``fused_keep``)
            fused.remember_keep(self, pi, scores)
        self._pi_at_u = pi = pi.detach()
        self._u = torch.rand(self.n, device=pi.device, dtype=pi.dtype)
        return (self._u < pi).to(pi.dtype)

    def fused_masked_weight(
        self, weight: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        phi = self.phi
        if self._antithetic:
            u = self._stored_u()
        else:
            self._u = u = torch.rand(self.n, device=phi.device, dtype=phi.dtype)
            self._pi_at_u = None
        flags = torch.tensor([self.hard_sigmoid, self._antithetic], device=phi.device)
        return fused.masked_weight(_FUSED, weight, u, phi, phi.new_tensor(self.k), flags)

    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        cached = self.fused_keep(scores)
        return cached if cached is not None else self._pi()

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
        difference = float(antithetic_loss) - float(loss)
        if self.phi.grad is not None and self.n >= fused.MIN_GROUPS and fused.enabled():
            # one loop instead of five passes over one value per weight
            flag = torch.tensor(self.hard_sigmoid, device=u.device)
            k, gap = u.new_tensor(self.k), u.new_tensor(difference)
            self.phi.grad = _add_estimate(self.phi.grad, u, self.phi.detach(), k, flag, gap)
            return
        grad = difference * (u - 0.5) * self._logit_slope()
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


def _pi(phi: torch.Tensor, k: torch.Tensor, hard_sigmoid: torch.Tensor) -> torch.Tensor:
    """``ArmGate._pi``; hard_sigmoid: a 0-d bool tensor."""
    hard_pi = torch.clamp(k * phi / HARD_SIGMOID_DIVISOR + 0.5, 0.0, 1.0)
    return torch.where(hard_sigmoid, hard_pi, torch.sigmoid(k * phi))


def _slope(
    pi: torch.Tensor, phi: torch.Tensor, k: torch.Tensor, hard_sigmoid: torch.Tensor
) -> torch.Tensor:
    """d pi / d phi, from pi itself for the sigmoid (no second exp), and the hard sigmoid's
    k / 7 where its clamp lets phi through (bounds included, as autograd's clamp does)."""
    pre = k * phi / HARD_SIGMOID_DIVISOR + 0.5
    inside = (pre >= 0.0) & (pre <= 1.0)
    hard_slope = torch.where(inside, k / HARD_SIGMOID_DIVISOR, torch.zeros_like(pre))
    return torch.where(hard_sigmoid, hard_slope, k * pi * (1.0 - pi))


def _z(u: torch.Tensor, pi: torch.Tensor, antithetic: torch.Tensor) -> torch.Tensor:
    """``sample``'s z: 1[u < pi], or 1[u > 1 - pi] in the antithetic pass."""
    return torch.where(antithetic, u > 1.0 - pi, u < pi).to(pi.dtype)


@fused.formula
def _masked(
    weight: torch.Tensor, u: torch.Tensor, phi: torch.Tensor, k: torch.Tensor, flags: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The weight where z is 1, and pi (the keep probability, kept for the backward);
    flags = (hard sigmoid, antithetic pass)."""
    pi = _pi(phi, k, flags[0])
    return weight * _z(u, pi, flags[1]).view_as(weight), pi, pi


@fused.formula
def _masked_backward(
    grad: torch.Tensor,
    grad_keep: torch.Tensor,
    weight: torch.Tensor,
    u: torch.Tensor,
    phi: torch.Tensor,
    k: torch.Tensor,
    flags: torch.Tensor,
    pi: torch.Tensor,
) -> tuple[torch.Tensor, None, torch.Tensor, None, None]:
    """The weight's gradient through z; phi's only through pi (the data loss's comes from
    the two-pass estimator)."""
    z = _z(u, pi, flags[1]).view_as(grad)
    return grad * z, None, grad_keep * _slope(pi, phi, k, flags[0]), None, None


@fused.formula
def _add_estimate(
    grad: torch.Tensor,
    u: torch.Tensor,
    phi: torch.Tensor,
    k: torch.Tensor,
    hard_sigmoid: torch.Tensor,
    difference: torch.Tensor,
) -> torch.Tensor:
    """grad + ``add_two_pass_gradient``'s estimate: difference * (u - 1/2) * d logit(pi) /
    d phi (k, or the hard sigmoid's slope over pi (1 - pi), 0 where pi is clamped)."""
    pi = torch.clamp(k * phi / HARD_SIGMOID_DIVISOR + 0.5, 0.0, 1.0)
    inside = (pi > 0) & (pi < 1)
    hard_slope = torch.where(
        inside, (k / HARD_SIGMOID_DIVISOR) / (pi * (1.0 - pi)), torch.zeros_like(pi)
    )
    slope = torch.where(hard_sigmoid, hard_slope, k.expand_as(pi))
    return grad + difference * (u - 0.5) * slope


_FUSED = (_masked, _masked_backward)
