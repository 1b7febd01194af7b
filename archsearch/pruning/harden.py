"""Hardening: turn a gated model into a plain, physically smaller ``nn.Module``.

Eval-mode gates are deterministic (``hard_mask * test_scale``), so hardening is exact: fold
each kept group's test scale into the weights (or into the BatchNorm affine terms that follow
a convolution), then remove the dropped groups with Torch-Pruning. The result has no gate
modules and computes what the gated model computes in eval mode.

The removal is driven by a JSON-friendly *structure* (kept indices per group), so the same
function rebuilds a hardened architecture from ``subnetwork.json`` without unpickling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from archsearch.errors import ConfigError, first_line
from archsearch.pruning.gated_model import GatedModel, spread
from archsearch.pruning.groups import GroupSpec, build_dependency_graph, tolerant_index_mapping


class SelectFeatures(nn.Module):
    """Keeps the input features that survived input gating, so the hardened model still
    takes the original input and its first layer is physically narrower."""

    def __init__(self, kept: list[int]) -> None:
        super().__init__()
        self.register_buffer("index", torch.tensor(kept, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(-1, self.index)


@dataclass
class HardenedModel:
    """The plain subnetwork and the facts needed to rebuild or describe it."""

    model: nn.Module
    #: per structured group: {"name", "kind", "root", "size", "kept"}; rebuilds the shapes
    structure: list[dict[str, Any]]
    #: weight granularity: fraction of non-zero weights per layer
    densities: dict[str, float] = field(default_factory=dict)
    #: groups whose gates dropped everything; hardening kept their strongest group
    degenerate_groups: list[str] = field(default_factory=list)


def harden(gated: GatedModel, input_shape: tuple[int, ...]) -> HardenedModel:
    hard, masks, scales = gated.hard_masks(), gated.kept_masks(), gated.test_scales()
    plain = gated.plain_copy()
    modules = dict(plain.named_modules())
    degenerate, structure, densities = [], [], {}
    with torch.no_grad():
        for group in gated.groups:
            mask, scale = masks[group.name], scales[group.name].clone()
            if not hard[group.name].any():  # revived by ``kept_masks``: its strongest element
                scale[mask & (scale <= 0)] = 1.0
                degenerate.append(group.name)
            _fold(modules, group, (mask.to(scale.dtype) * scale).repeat(group.repeat))
            if group.kind == "weight":
                densities[group.name] = float(mask.float().mean())
            else:
                structure.append(_structure_entry(group, mask))
    apply_structure(plain, input_shape, structure)
    plain.eval()
    return HardenedModel(plain, structure, densities, degenerate)


def _structure_entry(group: GroupSpec, mask: torch.Tensor) -> dict[str, Any]:
    """Kept channels in the root layer's numbering: gate element ``j`` of a group split into
    ``repeat`` convolution groups keeps channel ``j + k * size`` of each."""
    root = group.producers[0] if group.producers else group.consumers[0].layer
    kept = [
        k * group.size + j
        for k in range(group.repeat)
        for j in torch.nonzero(mask).flatten().tolist()
    ]
    return {"name": group.name, "kind": group.kind, "root": root, "size": group.width, "kept": kept}


def _fold(modules: dict[str, nn.Module], group: GroupSpec, factor: torch.Tensor) -> None:
    """Multiply the group's weights by mask * test_scale, exactly where the gate acted."""
    if group.kind == "weight":
        weight = modules[group.name].weight
        weight.mul_(factor.view_as(weight).to(weight.dtype))
        return
    if group.kind == "input":
        modules[group.consumers[0].layer].weight.mul_(factor.view(1, -1))
        return
    channels = group.site_channels or ((),) * len(group.mask_sites)
    for site, index in zip(group.mask_sites, channels, strict=True):
        module = modules[site]
        scale = spread(factor, index, module.weight.shape[0]) if index else factor
        shape = (-1,) if isinstance(module, nn.modules.batchnorm._BatchNorm) else _row_shape(module)
        module.weight.mul_(scale.view(shape))
        if module.bias is not None:
            module.bias.mul_(scale)


def _row_shape(module: nn.Module) -> tuple[int, ...]:
    return (-1, *([1] * (module.weight.dim() - 1)))


_OUT_PRUNERS = {nn.Conv2d: tp.prune_conv_out_channels, nn.Linear: tp.prune_linear_out_channels}


def apply_structure(
    model: nn.Module, input_shape: tuple[int, ...], structure: list[dict[str, Any]]
) -> nn.Module:
    """Physically remove every group not listed as kept, in place; returns ``model``."""
    if not structure:
        return model
    graph = build_dependency_graph(model, input_shape)
    modules = dict(model.named_modules())
    for entry in structure:
        dropped = sorted(set(range(entry["size"])) - set(entry["kept"]))
        root = modules[entry["root"]]
        if entry["kind"] == "input":
            if dropped:
                _remove(graph, root, tp.prune_linear_in_channels, dropped, entry["root"])
            _replace(model, entry["root"], nn.Sequential(SelectFeatures(entry["kept"]), root))
        elif dropped:
            _remove(graph, root, _OUT_PRUNERS[type(root)], dropped, entry["root"])
    return model


def _remove(graph: tp.DependencyGraph, root: nn.Module, how: Any, dropped: list, name: str) -> None:
    """Torch-Pruning's removal of one group; a failure names the layer in one line."""
    try:
        with tolerant_index_mapping():
            graph.get_pruning_group(root, how, dropped).prune()
    except Exception as error:
        raise ConfigError(
            f"cannot remove {len(dropped)} channels of layer {name!r} "
            f"({type(error).__name__}: {first_line(error)})"
        ) from None


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
