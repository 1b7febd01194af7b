"""Unit masks folded into their layers' weights train the same network as masks on outputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from archsearch.models import create_model
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups

LENET5 = (1, 28, 28)


def _gated_twins(model: nn.Module, shape: tuple[int, ...], granularity: str, gate: str):
    """Two gated copies of one network with equal gate parameters; the second never folds."""
    twin = copy.deepcopy(model)
    torch.manual_seed(2)
    folding = GatedModel(model, find_groups(model, shape, granularity), gate).train()
    torch.manual_seed(2)
    unfolded = GatedModel(twin, find_groups(twin, shape, granularity), gate).train()
    unfolded._folds.choose = lambda batch: frozenset()  # every mask on its layer's output
    return folding, unfolded


def _output_and_gradients(gated: GatedModel, x: torch.Tensor):
    torch.manual_seed(1)  # the same gate noise for both twins
    out = gated(x)
    params = list(gated.base.parameters()) + gated.gate_parameters()
    return out, torch.autograd.grad(out.square().sum(), params)


def _assert_same_network(folding: GatedModel, unfolded: GatedModel, x: torch.Tensor) -> None:
    out, grads = _output_and_gradients(folding, x)
    expected_out, expected_grads = _output_and_gradients(unfolded, x)
    torch.testing.assert_close(out, expected_out, rtol=1e-4, atol=1e-5)
    for got, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gate", ["hard_concrete", "trainable_gate", "learned_threshold"])
@pytest.mark.parametrize("granularity", ["channel", "channel+neuron"])
def test_folded_channel_masks_give_the_outputs_and_gradients_of_masked_outputs(
    gate: str, granularity: str
) -> None:
    torch.manual_seed(0)
    model = create_model("lenet5_caffe", LENET5, 10)
    folding, unfolded = _gated_twins(model, LENET5, granularity, gate)
    x = torch.randn(16, *LENET5)
    assert {"0", "3"} <= folding._folds.choose(16)  # both convolutions fold at this batch
    _assert_same_network(folding, unfolded, x)


def test_grouped_convolution_folds_each_group_channel() -> None:
    """A grouped convolution's gate element switches one channel in every group (``repeat``):
    folded, it scales those filters."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.ReLU(),
        nn.Conv2d(8, 6, 1), nn.Flatten(), nn.LazyLinear(4),
    )  # fmt: skip
    model(torch.randn(1, 3, 10, 10))
    folding, unfolded = _gated_twins(model, (3, 10, 10), "channel", "hard_concrete")
    x = torch.randn(8, 3, 10, 10)
    assert any(g.repeat > 1 for g in folding.groups)
    assert folding._folds.choose(8)
    _assert_same_network(folding, unfolded, x)


def test_a_wide_layer_keeps_its_mask_on_the_output() -> None:
    """LeNet-300-100's first layer has 235,200 weights and 300 outputs an example: at a batch
    of 128 the output is the smaller tensor to multiply, at 1024 the weight."""
    model = create_model("lenet_300_100", (784,), 10)
    gated = GatedModel(model, find_groups(model, (784,), "neuron"), "hard_concrete").train()
    assert "1" not in gated._folds.choose(128)
    assert "1" in gated._folds.choose(1024)


def test_a_shared_weight_is_never_folded() -> None:
    """Swapping a scaled weight into one layer would scale it in every layer that shares it."""
    first = nn.Conv2d(4, 4, 3, padding=1)
    second = nn.Conv2d(4, 4, 3, padding=1)
    second.weight = first.weight
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), first, nn.ReLU(), second,
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))  # fmt: skip
    gated = GatedModel(model, find_groups(model, (1, 8, 8), "channel"), "hard_concrete").train()
    folded = gated._folds.choose(8)
    assert "0" in folded
    assert not {"2", "4"} & folded
