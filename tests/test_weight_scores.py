"""Learned thresholds' group scores: the one-pass mean of squares against the plain formula."""

from __future__ import annotations

import pytest
import torch

from archsearch.pruning.weight_scores import mean_squares


@pytest.mark.parametrize(
    ("shapes", "dim"),
    [([(30, 78)], 1), ([(30, 78)], 0), ([(12, 20), (12, 45)], 1), ([(7, 9), (5, 9)], 0)],
)
def test_mean_squares_equal_the_squared_weights_mean_with_their_gradients(shapes, dim):
    """Value and gradient of each weight equal ``cat(weights).pow(2).mean(dim)``'s: the
    scores and the weights' pull from the threshold are what the formula says."""
    torch.manual_seed(0)
    weights = [torch.randn(*shape, dtype=torch.float64, requires_grad=True) for shape in shapes]
    twins = [w.detach().clone().requires_grad_() for w in weights]
    scores = mean_squares(weights, dim)
    expected = torch.cat(twins, dim=dim).pow(2).mean(dim)
    torch.testing.assert_close(scores, expected)
    upstream = torch.randn_like(expected)
    scores.backward(upstream)
    expected.backward(upstream)
    for weight, twin in zip(weights, twins, strict=True):
        torch.testing.assert_close(weight.grad, twin.grad)


def test_mean_squares_pass_gradcheck():
    weight = torch.randn(6, 11, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: mean_squares([w], 1), (weight,))
    assert torch.autograd.gradcheck(lambda w: mean_squares([w, 2 * w], 0), (weight,))
