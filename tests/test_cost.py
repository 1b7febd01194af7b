"""The penalty's expected cost, checked against hand-computed multiply-accumulates."""

from __future__ import annotations

import pytest
import torch

from archsearch.errors import ConfigError, GranularityError
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.groups import find_groups, layer_geometry

LENET300 = (1, 28, 28)


def _cost(model_name: str, shape: tuple, granularity: str, cost: str = "flops", **kw):
    model = create_model(model_name, shape, 10)
    groups = find_groups(model, shape, granularity, **kw)
    return CostModel(layer_geometry(model, shape), groups, cost), groups


def test_dense_cost_is_lenet300_macs() -> None:
    model, _ = _cost("lenet_300_100", LENET300, "neuron")
    assert model.dense == 784 * 300 + 300 * 100 + 100 * 10


def test_neuron_keep_fractions_multiply_through_consumers() -> None:
    model, groups = _cost("lenet_300_100", LENET300, "neuron")
    assert [g.size for g in groups] == [300, 100]  # the classifier's outputs are never gated
    keep = {groups[0].name: torch.full((300,), 0.5), groups[1].name: torch.full((100,), 0.25)}
    expected = 784 * 150 + 150 * 25 + 25 * 10
    assert model.ratio(keep).item() == pytest.approx(expected / model.dense)


def test_input_gating_scales_the_first_layer() -> None:
    model, groups = _cost("lenet_300_100", LENET300, "neuron", gate_inputs=True)
    assert groups[0].kind == "input" and groups[0].size == 784
    keep = {g.name: torch.ones(g.size) for g in groups}
    keep["input"] = torch.zeros(784)
    keep["input"][:392] = 1
    expected = 392 * 300 + 300 * 100 + 100 * 10
    assert model.ratio(keep).item() == pytest.approx(expected / model.dense)


def test_weight_granularity_counts_each_weight_by_its_output_positions() -> None:
    model, groups = _cost("lenet5_caffe", LENET300, "weight")
    keep = {g.name: torch.zeros(g.size) for g in groups}
    keep[groups[0].name][:10] = 1  # ten weights of conv1: each used at 24*24 positions
    assert model.ratio(keep).item() == pytest.approx(10 * 24 * 24 / 2_293_000)


def test_channel_group_shrinks_the_flattened_fc_input() -> None:
    model, groups = _cost("lenet5_caffe", LENET300, "channel")
    conv1, conv2 = groups
    keep = {conv1.name: torch.ones(20), conv2.name: torch.zeros(50)}
    keep[conv2.name][:25] = 1
    expected = 288_000 + 1_600_000 / 2 + 400_000 / 2 + 5_000
    assert model.ratio(keep).item() == pytest.approx(expected / 2_293_000)


def test_params_cost_counts_weights_and_biases() -> None:
    model, groups = _cost("lenet_300_100", LENET300, "neuron", cost="params")
    assert model.dense == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    keep = {g.name: torch.ones(g.size) for g in groups}
    assert model.ratio(keep).item() == pytest.approx(1.0)


def test_resnet_residual_channels_share_one_gate() -> None:
    model = create_model("resnet20", (3, 32, 32), 10)
    groups = find_groups(model, (3, 32, 32), "channel")
    stem = next(g for g in groups if g.name == "conv1")
    # the stem's 16 channels are added to every residual output of the first stage
    assert len(stem.producers) >= 4
    assert len(stem.mask_sites) == len(stem.producers)


def test_granularity_the_model_lacks_is_a_clear_error() -> None:
    with pytest.raises(GranularityError, match="channel"):
        _cost("lenet_300_100", LENET300, "channel")
    with pytest.raises(ConfigError, match="unknown granularity"):
        _cost("lenet_300_100", LENET300, "filters")
    with pytest.raises(ConfigError, match="penalty cost"):
        CostModel({}, [], "energy")


@pytest.mark.parametrize(
    ("model_name", "shape", "granularity", "kw"),
    [
        ("lenet_300_100", LENET300, "neuron", {"gate_inputs": True}),
        ("lenet_300_100", LENET300, "weight", {}),
        ("lenet5_caffe", LENET300, "channel+neuron", {}),
        ("resnet20", (3, 32, 32), "channel", {}),
    ],
)
@pytest.mark.parametrize("cost", ["flops", "params"])
def test_the_host_ratio_equals_the_tensor_formula(model_name, shape, granularity, kw, cost):
    """On a CPU the ratio is read and evaluated in Python as one autograd node; its value
    and each keep probability's gradient are those of the formula an accelerator runs."""
    model, groups = _cost(model_name, shape, granularity, cost, **kw)
    torch.manual_seed(0)
    keep = {g.name: torch.rand(g.size, requires_grad=True) for g in groups}
    host = model.ratio(keep)
    on_device = model.tensor_ratio(keep)
    assert host.dtype == on_device.dtype == torch.float32
    torch.testing.assert_close(host, on_device)
    for a, b in zip(
        torch.autograd.grad(host, list(keep.values())),
        torch.autograd.grad(on_device, list(keep.values())),
        strict=True,
    ):
        torch.testing.assert_close(a, b)
    masks = {name: (k > 0.5) for name, k in keep.items()}  # hard masks arrive as bools too
    torch.testing.assert_close(model.ratio(masks), model.tensor_ratio(masks))
