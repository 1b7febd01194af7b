"""Convolution weights in channels-last order while a network trains on a CPU.

PyTorch's CPU convolutions (oneDNN) run faster on channels-last tensors: a plain LeNet-5-Caffe
training step on one thread took 23.4 ms with channels-last weights against 37.4 ms in the
usual order, a ResNet-20 step 320 ms against 402 (benchmarks/RESULTS.md, "Channel masks
folded into the convolutions' weights, and channels-last training on a CPU").
A convolution given a channels-last weight returns a channels-last output, so converting the
weights is enough; the inputs are left as they come. The network goes back to the usual
order when the phase ends: what is saved (safetensors wants contiguous tensors), pruned or
exported sees the layout it always saw. Accelerators keep their order (not measured there).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def channels_last_on_cpu(model: nn.Module) -> Iterator[None]:
    """Train ``model`` inside with its 4-D weights channels-last, if it has convolutions and
    lives on the CPU; the same parameter objects throughout, so optimizers built inside or
    outside keep working."""
    if not _converts(model):
        yield
        return
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def _converts(model: nn.Module) -> bool:
    convolutions = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return bool(convolutions) and all(m.weight.device.type == "cpu" for m in convolutions)
