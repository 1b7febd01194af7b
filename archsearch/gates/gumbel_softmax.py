"""Straight-through Gumbel-Softmax gates (Zhang, Tao, Zhang 2023)."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.gates import fused
from archsearch.gates.base import Gate
from archsearch.gates.registry import register_built_in
from archsearch.gates.shared import (
    SIGMOID_BOUND,
    annealed,
    check_temperatures,
    keep_logit,
    logistic_noise,
)

#: a little init noise so gates at drop rate 0.5 do not all sit exactly on the eval threshold
INIT_STD = 1e-2


@register_built_in("gumbel_softmax")
class GumbelSoftmaxGate(Gate):
    """A keep/drop Gumbel-Softmax per group, hard in the forward, relaxed in the backward.

    Over two classes the softmax of (theta + g1, g2) is sigmoid(theta + g1 - g2), so one logit
    per group suffices. The forward value is exactly binary, so the network trains on the very
    subnetworks it will be hardened to; the temperature ``tau`` (a buffer, so checkpoints keep
    the schedule's position) anneals exponentially from ``tau0`` to ``tau_min``, sharpening
    the backward surrogate. The paper's exact schedule could not be read (docs/gates.md); this is
    the standard estimator its abstract names. ``theta`` starts at logit(1 - init_drop_rate)
    plus N(0, 0.01) noise.
    """

    #: measured: without it, keep probabilities sink together and the hard mask keeps a
    #: fraction of what the penalty pulls on (docs/gates.md, "What each method adds to it")
    polarisation = 5.0
    #: lambda factors without a target (``Gate.unit_lambda_scale``), fitted on the trained
    #: LeNet-300-100 (benchmarks/RESULTS.md, "One lambda across gates, every gate scaled")
    unit_lambda_scale = 0.035
    weight_lambda_scale = 0.5

    def __init__(
        self, n: int, *, init_drop_rate: float = 0.5, tau0: float = 1.0, tau_min: float = 0.1
    ) -> None:
        super().__init__(n)
        mean = keep_logit("gumbel_softmax", init_drop_rate)
        check_temperatures("gumbel_softmax", tau0, tau_min)
        self.tau0 = float(tau0)
        self.tau_min = float(tau_min)
        self.theta = nn.Parameter(torch.randn(n) * INIT_STD + mean)
        self.register_buffer("tau", torch.tensor(self.tau0))

    def sample(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        # g1 - g2 of two Gumbel(0, 1) draws is exactly Logistic(0, 1): one draw, one logit
        y = torch.sigmoid((self.theta + logistic_noise(self.theta)) / self.tau)
        hard = (y > 0.5).to(y.dtype)
        # y - y.detach() is exactly 0 in value but carries y's gradient: z is exactly binary.
        return hard + (y - y.detach())

    def fused_masked_weight(
        self, weight: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # the noise is drawn and logit-ed eagerly, as in ``sample``: a log in the compiled
        # loop (Sleef) cost ~5x torch's own logit on the 2-vCPU machine
        noise = logistic_noise(self.theta)
        return fused.masked_weight(_FUSED, weight, noise, self.theta, self.tau)

    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        cached = self.fused_keep(scores)
        return cached if cached is not None else torch.sigmoid(self.theta)

    def hard_mask(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        return self.theta > 0

    def keep_map(self) -> torch.Tensor:
        """Which input features survive, as 0/1 floats: the paper reads importance off it."""
        return self.hard_mask().to(self.theta.dtype)

    def set_progress(self, progress: float) -> None:
        self.tau.fill_(annealed(self.tau0, self.tau_min, progress))


@fused.formula
def _masked(
    weight: torch.Tensor, noise: torch.Tensor, theta: torch.Tensor, tau: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The weight where ``sample``'s hard z is 1 (noise: its logistic draw) and the keep
    probability; keeps the relaxed y for the backward."""
    # bounded: at tau_min = 0.1 the argument reaches +-200, where y would be a denormal
    y = torch.sigmoid(((theta + noise) / tau).clamp(-SIGMOID_BOUND, SIGMOID_BOUND))
    keep = torch.sigmoid(theta)
    return weight * (y > 0.5).to(weight.dtype).view_as(weight), keep, y, keep


@fused.formula
def _masked_backward(
    grad: torch.Tensor,
    grad_keep: torch.Tensor,
    weight: torch.Tensor,
    noise: torch.Tensor,
    theta: torch.Tensor,
    tau: torch.Tensor,
    y: torch.Tensor,
    keep: torch.Tensor,
) -> tuple[torch.Tensor, None, torch.Tensor, None]:
    """Straight through: the weight sees the hard z, theta the relaxed y's slope."""
    hard = (y > 0.5).to(grad.dtype).view_as(grad)
    grad_theta = (grad * weight).flatten() * (y * (1.0 - y)) / tau
    return grad * hard, None, grad_theta + grad_keep * keep * (1.0 - keep), None


_FUSED = (_masked, _masked_backward)
