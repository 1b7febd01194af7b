"""Hardening is exact: the plain subnetwork computes what the gated model computes in eval mode.

Gate parameters and BatchNorm statistics are randomised (as after training) so that some
groups drop and test scales are fractional; then every gate × applicable granularity is
hardened on an MLP, LeNet-5-Caffe and resnet20 and compared on a batch.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from archsearch.gates import Gate, list_gates
from archsearch.models import create_model
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups
from archsearch.pruning.harden import harden

CASES = [
    ("mlp", (1, 8, 8), {"hidden": [32, 16]}, "weight", False),
    ("mlp", (1, 8, 8), {"hidden": [32, 16]}, "neuron", False),
    ("mlp", (1, 8, 8), {"hidden": [32, 16]}, "neuron", True),
    ("lenet5_caffe", (1, 28, 28), {}, "weight", False),
    ("lenet5_caffe", (1, 28, 28), {}, "channel", False),
    ("lenet5_caffe", (1, 28, 28), {}, "channel+neuron", False),
    ("resnet20", (3, 16, 16), {"width": 8}, "weight", False),
    ("resnet20", (3, 16, 16), {"width": 8}, "channel", False),
]


def _randomise(gated: GatedModel) -> None:
    """Put gates and BatchNorm in a state like the end of training: mixed keep/drop decisions."""
    with torch.no_grad():
        for group in gated.groups:
            gate = gated.gate(group.name)
            for param in gate.parameters():
                if param.numel() == gate.n:
                    param.normal_(0.0, 2.0)
                else:  # learned_threshold: put its relative threshold mid-way through the scores
                    median = gated.scores(group).median()
                    param.fill_(float(median / gate.score_scale))
        for module in gated.base.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.5)


def _case_id(case: tuple) -> str:
    model, _, _, granularity, inputs = case
    return f"{model}-{granularity}{'-inputs' if inputs else ''}"


@pytest.mark.parametrize("gate_name", list_gates())
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_hardened_equals_gated_eval(gate_name: str, case: tuple) -> None:
    model_name, shape, options, granularity, gate_inputs = case
    torch.manual_seed(0)
    model = create_model(model_name, shape, 10, **options)
    groups = find_groups(model, shape, granularity, gate_inputs=gate_inputs)
    gated = GatedModel(model, groups, gate_name)
    gated.calibrate()
    _randomise(gated)
    gated.eval()
    x = torch.randn(16, *shape)
    with torch.no_grad():
        expected = gated(x)
        hardened = harden(gated, shape)
        actual = hardened.model(x)

    assert not any(isinstance(m, Gate) for m in hardened.model.modules())
    assert (actual - expected).abs().max().item() <= 1e-4
    if granularity != "weight":
        dense = sum(p.numel() for p in model.parameters())
        assert sum(p.numel() for p in hardened.model.parameters()) < dense, "nothing was removed"
    # the gated model is untouched by hardening: still gated, same outputs
    with torch.no_grad():
        assert torch.equal(gated(x), expected)


def test_torchvision_resnet_is_physically_narrower() -> None:
    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = create_model("torchvision/resnet18", shape, 10)
    groups = find_groups(model, shape, "channel")
    gated = GatedModel(model, groups, "arm")
    _randomise(gated)
    gated.eval()
    x = torch.randn(2, *shape)
    with torch.no_grad():
        expected = gated(x)
        hardened = harden(gated, shape).model
        assert (hardened(x) - expected).abs().max().item() <= 1e-4
    assert hardened.layer1[0].conv1.out_channels < 64
    # coupled residual channels share a gate: the stem and layer1's outputs stay equal in width
    assert hardened.conv1.out_channels == hardened.layer1[0].conv2.out_channels


def test_dead_layer_keeps_its_strongest_group() -> None:
    torch.manual_seed(0)
    model = create_model("mlp", (1, 8, 8), 10, hidden=[16])
    groups = find_groups(model, (1, 8, 8), "neuron")
    gated = GatedModel(model, groups, "trainable_gate")
    with torch.no_grad():
        gate = gated.gate(groups[0].name)
        gate.w.fill_(-1.0)
        gate.w[3] = -0.5
    hardened = harden(gated.eval(), (1, 8, 8))
    assert hardened.degenerate_groups == [groups[0].name]
    assert hardened.structure[0]["kept"] == [3]
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():  # the gated model in eval computes the network that is shipped
        assert (hardened.model(x) - gated(x)).abs().max().item() <= 1e-5


@pytest.mark.parametrize("host_reads", [("cpu",), ()], ids=["host-check", "device-mark"])
def test_a_dead_layer_trains_with_the_unit_hardening_keeps(monkeypatch, host_reads) -> None:
    """A structured group whose gates all closed trains, and is costed, as the network that
    hardening ships: its strongest element stays in the forward and in the expected cost the
    penalty's gradient pulls on, and that element's gate still gets a gradient."""
    from archsearch.pruning.cost import CostModel
    from archsearch.pruning.groups import layer_geometry

    # both ways of finding the survivor: a host check (CPU) and a mark built on the device
    monkeypatch.setattr("archsearch.pruning.host_reads.DEVICES", host_reads)
    shape = (1, 28, 28)
    torch.manual_seed(0)
    model = create_model("lenet5_caffe", shape, 10)
    groups = find_groups(model, shape, "channel")
    cost = CostModel(layer_geometry(model, shape), groups, "flops")
    gated = GatedModel(model, groups, "trainable_gate").train()
    first = gated.gate(groups[0].name)
    with torch.no_grad():
        first.w.fill_(-1.0)  # conv1: every channel closed
        first.w[7] = -0.5  # the strongest of them
    logits = gated(torch.randn(4, *shape))
    assert logits.std(0).sum() > 0, "the inputs no longer reach the output: a dead layer trained"
    keep = gated.keep_probabilities(gated.last_scores)
    kept = {name: mask.float() for name, mask in gated.kept_masks(gated.last_scores).items()}
    assert keep[groups[0].name].nonzero().flatten().tolist() == [7]
    assert float(cost.ratio(keep).detach()) == pytest.approx(float(cost.ratio(kept)), rel=1e-6)
    (logits.square().sum() + cost.ratio(keep)).backward()
    assert first.w.grad[7] != 0


def test_the_penalty_pays_for_the_unit_a_dead_layer_keeps() -> None:
    """A channel layer whose gates all closed costs nothing in the hard masks but keeps one
    channel when hardened, with the next layer's input: the cost the penalty sees
    (``kept_masks``) is the hardened network's fvcore FLOPs, not the cheaper dead network."""
    from archsearch.pruning.cost import CostModel
    from archsearch.pruning.flops import count_flops
    from archsearch.pruning.groups import layer_geometry

    shape = (1, 28, 28)
    model = create_model("lenet5_caffe", shape, 10)
    groups = find_groups(model, shape, "channel")
    dense_flops = count_flops(model, shape).total
    cost = CostModel(layer_geometry(model, shape), groups, "flops")
    gated = GatedModel(model, groups, "trainable_gate").eval()
    with torch.no_grad():
        first = gated.gate(groups[0].name)
        first.w.fill_(-1.0)  # conv1: every channel closed
        first.w[7] = -0.5  # the strongest of them
        gated.gate(groups[1].name).w[:6] = 1.0  # conv2: 6 of 50 channels kept
        gated.gate(groups[1].name).w[6:] = -1.0
    kept, hard = gated.kept_masks(), gated.hard_masks()
    assert not hard[groups[0].name].any() and kept[groups[0].name].nonzero().flatten().tolist() == [
        7
    ]
    masks = {name: mask.float() for name, mask in kept.items()}
    hardened = harden(gated, shape)
    assert float(cost.ratio(masks)) == pytest.approx(
        count_flops(hardened.model, shape).total / dense_flops, rel=1e-6
    )
    dead = {name: mask.float() for name, mask in hard.items()}
    assert float(cost.ratio(dead)) < float(cost.ratio(masks))  # what the penalty used to see


@pytest.mark.parametrize("gate_name", ["trainable_gate", "hard_concrete", "arm"])
def test_input_gates_train_the_network_of_gated_inputs(gate_name) -> None:
    """Differentiable input gates act as columns of the first layer's weight (no gradient of
    the layer's input to compute); ARM's samples, which carry no gradient, still multiply the
    input. Either way the output and every gradient are those of the network whose inputs
    are multiplied by the gates, written out by hand here."""
    torch.manual_seed(0)
    model = create_model("mlp", (20,), 3, hidden=[8])
    groups = find_groups(model, (20,), "neuron", gate_inputs=True)
    gated = GatedModel(model, groups, gate_name).train()
    x = torch.randn(16, 20)
    torch.manual_seed(1)
    out = gated(x)
    params = list(model.parameters())
    if gate_name != "arm":  # ARM's gates learn from its two-pass estimate, not autograd
        params += gated.gate_parameters()
    got = torch.autograd.grad(out.square().sum(), params)

    torch.manual_seed(1)  # the same noise, drawn in the same order (input gate first)
    z_in, z_hidden = gated.gate("input")(), gated.gate("1")()
    first, last = model[1], model[3]
    hidden = torch.relu(torch.nn.functional.linear(x * z_in, first.weight, first.bias)) * z_hidden
    expected_out = torch.nn.functional.linear(hidden, last.weight, last.bias)
    expected = torch.autograd.grad(expected_out.square().sum(), params)
    torch.testing.assert_close(out, expected_out)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)
