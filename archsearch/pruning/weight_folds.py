"""Unit masks applied through a layer's weight instead of its input or output.

A gate on a layer's output units scales the output unit by unit; the same network is the layer
with each unit's weights and bias scaled: ``conv(x, W diag z) + b z`` is ``(conv(x, W) + b) z``.
The product on the output, its backward and the gate's gradient (a product and a sum over the
batch) are three passes over the step's largest tensors. Folded into the weight they are
three passes over the weight, and the gate's gradient comes from the weight's gradient, which
the step computes anyway: ``dL/dz_c = sum(W_c * dL/dW~_c) + b_c * dL/db~_c``. A convolution's
weight is small beside its output (LeNet-5-Caffe's first: 500 weights against 1.5 million
outputs a batch of 128), a wide fully connected layer's is not (LeNet-300-100's first:
235,200 against 38,400), so each forward folds a group only where its weights are the fewer
numbers, from the outputs per example that ``find_groups`` traced (benchmarks/RESULTS.md,
"Channel masks folded into the convolutions' weights, and channels-last training on a CPU").

Gated input features are the same idea on the input side: columns of the first layer's weight
(benchmarks/RESULTS.md, "Fewer small operations, and input gates as weight columns").
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from archsearch.pruning.groups import GroupSpec

#: layers whose weight's first axis is their output's unit axis
FOLDABLE = (nn.Linear, nn.Conv2d)


class OutputFolds:
    """Which structured groups a forward folds into their layers' weights, and the weights."""

    def __init__(self, base: nn.Module, groups: list[GroupSpec]) -> None:
        modules = dict(base.named_modules())
        shared = _shared_parameters(base)
        #: group name -> its mask sites, for the groups whose every site can fold
        self._sites = {
            g.name: g.mask_sites
            for g in groups
            if g.kind not in ("weight", "input")
            and g.mask_sites
            and not any(g.site_channels)
            and len(g.site_outputs) == len(g.mask_sites)
            and all(g.site_outputs)
            and all(_foldable(modules[s], shared) for s in g.mask_sites)
        }
        self._modules = {s: modules[s] for sites in self._sites.values() for s in sites}
        self._repeats = {g.name: g.repeat for g in groups}
        #: per group, its weights and biases, and its sites' outputs for one example
        self._weights = {
            g.name: sum(_parameter_count(modules[s]) for s in g.mask_sites)
            for g in groups
            if g.name in self._sites
        }
        self._outputs = {g.name: sum(g.site_outputs) for g in groups if g.name in self._sites}

    def choose(self, batch: int) -> frozenset[str]:
        """The groups whose weights hold fewer numbers than their outputs for ``batch``."""
        return frozenset(n for n in self._sites if self._weights[n] < batch * self._outputs[n])

    def fold(
        self,
        masked: dict[str, torch.Tensor],
        folded: frozenset[str],
        masks: dict[str, torch.Tensor],
    ) -> None:
        """Add to ``masked`` (parameter name -> tensor, for ``functional_call``) the scaled
        weight and bias of every site of the ``folded`` groups; a weight already there (its
        input columns gated) is scaled on top."""
        for name in folded:
            z = masks[name]
            z = z.repeat(self._repeats[name]) if self._repeats[name] > 1 else z
            for site in self._sites[name]:
                module = self._modules[site]
                weight = masked.get(f"{site}.weight", module.weight)
                masked[f"{site}.weight"] = weight * z.view(-1, *([1] * (weight.dim() - 1)))
                if module.bias is not None:
                    masked[f"{site}.bias"] = module.bias * z


def input_columns(
    groups: list[GroupSpec],
    masks: dict[str, torch.Tensor],
    weight_of: Callable[[str], torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Input features gated as the first layer's weight columns: x (W diag z)^T is
    (x diag z) W^T, but its gradient for z comes from the weight's gradient, which the step
    computes anyway (dL/dz_j = sum_i W_ij (dL/dW~)_ij), where multiplying the input needed
    the gradient of the layer's input, a second product as large as the layer's forward that a
    plain network never computes."""
    masked = {}
    for group in groups:
        if group.kind == "input" and as_columns(masks[group.name]):
            layer = group.consumers[0].layer
            masked[f"{layer}.weight"] = weight_of(layer) * masks[group.name]
    return masked


def as_columns(mask: torch.Tensor) -> bool:
    """Whether an input mask gates the first layer's weight columns rather than the input:
    when it carries a gradient. One without (ARM's samples, eval) is cheaper on the input,
    batch x features, than on every weight of the layer."""
    return mask.requires_grad


def _foldable(module: nn.Module, shared: set[int]) -> bool:
    """A plain layer whose weight no other module uses (``functional_call`` would swap the
    scaled weight in for both)."""
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    return (
        type(module) in FOLDABLE
        and isinstance(weight, nn.Parameter)
        and id(weight) not in shared
        and (bias is None or id(bias) not in shared)
    )


def _shared_parameters(base: nn.Module) -> set[int]:
    seen: set[int] = set()
    shared: set[int] = set()
    for _, parameter in base.named_parameters(remove_duplicate=False):
        (shared if id(parameter) in seen else seen).add(id(parameter))
    return shared


def _parameter_count(module: nn.Module) -> int:
    return module.weight.numel() + (module.bias.numel() if module.bias is not None else 0)
