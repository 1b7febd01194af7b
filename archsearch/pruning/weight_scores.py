"""Mean squared weight per group: the score learned thresholds compare against.

The score is taken every training step, over every weight a gated layer has. Written as
``weight.pow(2).mean(1)``, the forward writes a squared copy of the weight and autograd's
backward makes four passes over it (an expanded division, ``pow(weight, 1)``, two products)
before accumulating into its gradient. Here the forward is one reduction (``vector_norm``, no
copy) and the backward one product (benchmarks/RESULTS.md, "Learned thresholds of units: one
mask and one pass a step").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.autograd.function import once_differentiable


class _SumOfSquares(torch.autograd.Function):
    """sum(w^2) along ``dim`` of a 2-d weight; gradient 2 w g in one pass."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, dim: int) -> torch.Tensor:
        ctx.save_for_backward(weight)
        ctx.dim = dim
        return torch.linalg.vector_norm(weight, 2, dim=dim).square_()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (weight,) = ctx.saved_tensors
        return weight * (2.0 * grad).unsqueeze(ctx.dim), None


def mean_squares(weights: Sequence[torch.Tensor], dim: int) -> torch.Tensor:
    """Mean of the squared entries along ``dim`` of 2-d weights that share the other axis
    (a group's producers, each flattened to rows of its units): one score per row (``dim``
    1) or per column (``dim`` 0), over all the weights together, without concatenating them."""
    total = _SumOfSquares.apply(weights[0], dim)
    for weight in weights[1:]:
        total = total + _SumOfSquares.apply(weight, dim)
    return total / sum(weight.shape[dim] for weight in weights)
