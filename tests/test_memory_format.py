"""Channels-last weights while training on a CPU, and the usual order everywhere else."""

from __future__ import annotations

import contextlib

import torch

from archsearch.memory_format import channels_last_on_cpu
from archsearch.models import create_model
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups


def _channels_last(tensor: torch.Tensor) -> bool:
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


def test_convolutions_train_channels_last_and_come_back_contiguous() -> None:
    model = create_model("tiny_cnn", (3, 8, 8), 4)
    conv = model[3]
    weight = conv.weight
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    with channels_last_on_cpu(model):
        assert _channels_last(conv.weight)
        loss = model(torch.randn(4, 3, 8, 8)).square().sum()
        loss.backward()
        optimizer.step()  # the optimizer built outside updates the converted weights
        inside = conv.weight.detach().clone()
    assert conv.weight is weight  # the same parameter: optimizers and gates still hold it
    assert all(p.is_contiguous() for p in model.parameters())
    torch.testing.assert_close(conv.weight.detach(), inside)


def test_a_network_without_convolutions_is_left_alone() -> None:
    model = create_model("lenet_300_100", (784,), 10)
    before = [p.data_ptr() for p in model.parameters()]
    with channels_last_on_cpu(model):
        assert [p.data_ptr() for p in model.parameters()] == before


def test_weight_gates_train_the_same_network_on_channels_last_weights() -> None:
    """A weight-granularity gate views its per-weight values as the weight (``view_as``) and
    flattens the weight's gradient: both follow the tensor's shape, not its memory, so the
    fused formulas give the same outputs and gradients in either order."""
    shape = (1, 28, 28)
    x = torch.randn(8, *shape)
    results = []
    for channels_last in (False, True):
        torch.manual_seed(0)
        model = create_model("lenet5_caffe", shape, 10)
        gated = GatedModel(model, find_groups(model, shape, "weight"), "hard_concrete").train()
        with channels_last_on_cpu(model) if channels_last else contextlib.nullcontext():
            assert _channels_last(model[3].weight) == channels_last
            torch.manual_seed(1)
            out = gated(x)
            params = list(model.parameters()) + gated.gate_parameters()
            grads = torch.autograd.grad(out.square().sum(), params)
        results.append((out, grads))
    (out, grads), (cl_out, cl_grads) = results
    torch.testing.assert_close(cl_out, out, rtol=1e-4, atol=1e-5)
    for got, expected in zip(cl_grads, grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
