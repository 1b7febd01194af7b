"""Trainable gate functions (Kim, Park, Jung, Choe 2019): a step with a shaped gradient."""

from __future__ import annotations

import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.gates import fused
from archsearch.gates.base import Gate
from archsearch.gates.registry import register_built_in

GRADIENT_SHAPES = ("ste", "sigmoid")
#: open start: w = INIT_W + N(0, INIT_STD), far enough from the step that noise cannot close it
INIT_W = 0.5
INIT_STD = 1e-2


@register_built_in("trainable_gate")
class TrainableGate(Gate):
    """z = step(w) in the forward, gradient s(w) in the backward.

    The paper's g_K(w) = step(w) + s(w) (K w - floor(K w)) / K equals the step in value and
    has derivative s(w); in floating point the sawtooth term is just noise, so we build the
    same value and gradient directly as step(w) + (g(w) - g(w).detach()) with g' = s.
    ``gradient_shape="ste"`` uses s = 1; ``"sigmoid"`` uses
    s(w) = d/dw sigmoid(sigmoid_scale * w), which equals 1 at w = 0 for the default scale 4
    and fades away from the threshold, so decided gates move less.

    The penalty is built on z itself, so it is the exact current cost of the subnetwork.
    """

    #: lambda factors without a target (``Gate.unit_lambda_scale``), fitted on the trained
    #: LeNet-300-100 (benchmarks/RESULTS.md, "One lambda across gates, every gate scaled")
    unit_lambda_scale = 0.03
    weight_lambda_scale = 0.35

    def __init__(self, n: int, *, gradient_shape: str = "ste", sigmoid_scale: float = 4.0) -> None:
        super().__init__(n)
        if gradient_shape not in GRADIENT_SHAPES:
            raise ConfigError(
                f"trainable_gate gradient_shape must be one of {', '.join(GRADIENT_SHAPES)}, "
                f"got {gradient_shape!r}"
            )
        if sigmoid_scale <= 0:
            raise ConfigError(f"trainable_gate sigmoid_scale must be positive, got {sigmoid_scale}")
        self.gradient_shape = gradient_shape
        self.sigmoid_scale = float(sigmoid_scale)
        self.w = nn.Parameter(torch.randn(n) * INIT_STD + INIT_W)

    def sample(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        surrogate = self._surrogate()
        step = (self.w >= 0).to(self.w.dtype)
        # surrogate - surrogate.detach() is exactly 0 in value: z stays exactly binary.
        return step + (surrogate - surrogate.detach())

    def fused_masked_weight(
        self, weight: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gradient_shape == "sigmoid":
            scale = self.w.new_tensor(self.sigmoid_scale)
            return fused.masked_weight(_FUSED_SIGMOID, weight, self.w, scale)
        return fused.masked_weight(_FUSED, weight, self.w)

    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """z itself, with its gradient: the penalty measures the actual current subnetwork."""
        cached = self.fused_keep(scores)
        return cached if cached is not None else self.sample(scores)

    def hard_mask(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        return self.w >= 0

    def strength(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """w itself: the binary keep probability cannot rank closed gates."""
        return self.w.detach()

    def _surrogate(self) -> torch.Tensor:
        if self.gradient_shape == "sigmoid":
            return torch.sigmoid(self.sigmoid_scale * self.w)
        return self.w


@fused.formula
def _masked(
    weight: torch.Tensor, w: torch.Tensor, *shape: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The weight where the step is 1, and the step (z, the keep probability)."""
    step = (w >= 0).to(weight.dtype)
    return weight * step.view_as(weight), step


@fused.formula
def _masked_backward(
    grad: torch.Tensor, grad_keep: torch.Tensor, weight: torch.Tensor, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Straight through: the step's value for the weight, s(w) = 1 for the gate through both
    outputs."""
    step = (w >= 0).to(grad.dtype)
    return grad * step.view_as(grad), (grad * weight).flatten() + grad_keep


@fused.formula
def _masked_backward_sigmoid(
    grad: torch.Tensor,
    grad_keep: torch.Tensor,
    weight: torch.Tensor,
    w: torch.Tensor,
    scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, None]:
    """s(w) = the slope of sigmoid(scale * w)."""
    step = (w >= 0).to(grad.dtype)
    s = torch.sigmoid(scale * w)
    grad_w = ((grad * weight).flatten() + grad_keep) * (scale * s * (1.0 - s))
    return grad * step.view_as(grad), grad_w, None


_FUSED = (_masked, _masked_backward)
_FUSED_SIGMOID = (_masked, _masked_backward_sigmoid)
