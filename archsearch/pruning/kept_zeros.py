"""Weights that weight-granularity hardening zeroed stay zero while the subnetwork fine-tunes.

The pruned network's FLOPs and sparse latency are counted on its zeros, and a zeroed weight
still gets a gradient, so an optimizer step would move it and ship a denser network than the
one counted; every step writes the zeros back.
"""

from __future__ import annotations

import torch
from torch import nn


def zero_masks(model: nn.Module) -> dict[torch.Tensor, torch.Tensor]:
    """Masks of the weight tensors that hardening left sparse, keyed by the weight."""
    masks = {}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nonzero = module.weight.detach() != 0
            if not bool(nonzero.all()):
                masks[module.weight] = nonzero
    return masks


@torch.no_grad()
def keep_zeros_zero(masks: dict[torch.Tensor, torch.Tensor]) -> None:
    """Write the zeros back after an optimizer step."""
    for weight, mask in masks.items():
        weight.mul_(mask)
