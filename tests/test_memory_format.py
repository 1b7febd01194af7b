"""Channels-last weights while training on a CPU, and the usual order everywhere else."""

from __future__ import annotations

import torch

from archsearch.memory_format import channels_last_on_cpu
from archsearch.models import create_model


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
