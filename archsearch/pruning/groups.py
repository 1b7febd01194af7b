"""Which weights one gate switches, for each granularity.

A *group spec* names one gate's territory: the layers whose outputs (or, for input gating,
inputs) it switches, the layers that consume those outputs, and the module whose output the
mask multiplies. Structured groups come from Torch-Pruning's dependency graph, so channels
coupled by residual additions (or concatenations) share one gate on any model it can trace.

Three layouts need more than Torch-Pruning's groups as they come:

* grouped convolutions: hardening keeps every convolution group equally wide, so one gate
  element switches channel ``j`` of each group (``repeat`` channels); depthwise convolutions
  follow their input channels, as Torch-Pruning couples them;
* channels reordered by a reshape (ShuffleNet's channel shuffle) or normalised together
  (LayerNorm, GroupNorm): removing some would change the rest, so those groups are refused,
  one line per layer, before training (``FoundGroups.refused``), and the rest are gated;
* Linear layers on channels-last images (ConvNeXt's blocks, Swin's MLPs) are pointwise
  convolutions: channels at a granularity that has channels, else neurons (so ``neuron``
  prunes Swin's MLP blocks as it prunes ViT's), masked on the last axis of their output.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from archsearch.errors import ConfigError, GranularityError
from archsearch.models import classifier_layer
from archsearch.pruning.tracing import (
    PRUNABLE_TYPES,
    build_dependency_graph,
    candidate_groups,
    channel_groups,
    device_of,
    producer_layers,
    refusal,
    tolerant_index_mapping,
)

__all__ = ["PRUNABLE_TYPES", "build_dependency_graph", "tolerant_index_mapping"]

GRANULARITIES: tuple[str, ...] = ("weight", "neuron", "channel", "channel+neuron")

#: structured kinds each granularity switches
_STRUCTURED_KINDS: dict[str, tuple[str, ...]] = {
    "neuron": ("neuron",),
    "channel": ("channel",),
    "channel+neuron": ("channel", "neuron"),
}


@dataclass(frozen=True)
class Consumer:
    """A layer whose inputs shrink when the group's outputs do; ``share`` of its inputs."""

    layer: str
    share: float


@dataclass(frozen=True)
class GroupSpec:
    """One gate's territory. ``kind`` is weight, neuron, channel or input."""

    name: str
    kind: str
    size: int
    #: layers whose outputs (weights, for kind=weight) the gate switches
    producers: tuple[str, ...]
    #: layers whose inputs lose the dropped groups
    consumers: tuple[Consumer, ...] = ()
    #: modules whose forward output is multiplied by the mask (BN after a conv, else the layer)
    mask_sites: tuple[str, ...] = ()
    #: convolution groups the channels are split into: gate element ``j`` switches channel
    #: ``j + k * size`` for every ``k < repeat``, so every group keeps the same width
    repeat: int = 1
    #: per mask site, the channels of its output the group spans (empty: all, in order)
    site_channels: tuple[tuple[int, ...], ...] = ()
    #: per mask site, its outputs for one example when the site is a traced layer, else 0:
    #: what decides whether the mask is cheaper on its weight (``weight_folds``)
    site_outputs: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        """Channels the group spans (``size`` gate elements, each ``repeat`` channels)."""
        return self.size * self.repeat


class FoundGroups(list):
    """``find_groups``' answer: the groups to gate (a plain list) and, in ``refused``, one
    line per layer that cannot be gated and why, for the report before training."""

    refused: tuple[str, ...] = ()


@dataclass(frozen=True)
class LayerGeometry:
    """Dense cost of one Conv2d/Linear for one input example."""

    name: str
    kind: str  # "conv" or "linear"
    macs: int
    weight_count: int
    bias_count: int
    in_width: int
    out_width: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def positions(self) -> int:
        """How many times each weight is used per example (output positions for a conv)."""
        return self.macs // self.weight_count


def check_granularity(name: str) -> None:
    if name not in GRANULARITIES:
        raise ConfigError(
            f"unknown granularity {name!r}; choose one of: {', '.join(GRANULARITIES)}"
        )


def layer_geometry(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, LayerGeometry]:
    """Dense multiply-accumulates and parameters of every Conv2d/Linear, in execution order."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            shapes.setdefault(name, tuple(output.shape))

        return hook

    handles = [
        module.register_forward_hook(record(name))
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device_of(model)))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    return {name: _geometry(name, modules[name], shape) for name, shape in shapes.items()}


def _geometry(name: str, module: nn.Module, out_shape: tuple[int, ...]) -> LayerGeometry:
    weights = module.weight.numel()
    bias = module.bias.numel() if module.bias is not None else 0
    outputs = 1
    for dim in out_shape:
        outputs *= dim
    if isinstance(module, nn.Conv2d):
        per_output = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
        return LayerGeometry(
            name,
            "conv",
            outputs * per_output,
            weights,
            bias,
            module.in_channels,
            module.out_channels,
            {"kernel": list(module.kernel_size), "groups": module.groups},
        )
    return LayerGeometry(
        name,
        "linear",
        outputs * module.in_features,
        weights,
        bias,
        module.in_features,
        module.out_features,
        {"channels_last": len(out_shape) == 4},  # a pointwise conv on (N, H, W, C)
    )


def find_groups(
    model: nn.Module,
    input_shape: tuple[int, ...],
    granularity: str,
    *,
    gate_inputs: bool = False,
    geometry: dict[str, LayerGeometry] | None = None,
) -> FoundGroups:
    """The groups a gate method will switch on ``model`` at ``granularity``.

    Raises GranularityError when the model has nothing to gate at that granularity, so a
    search never trains a model that cannot be pruned the way it was asked. Layers that cannot
    be gated are named in the answer's ``refused`` lines. Pass the model's ``layer_geometry``
    when the caller needs it too, to trace the model once.
    """
    check_granularity(granularity)
    geometry = geometry if geometry is not None else layer_geometry(model, input_shape)
    if granularity == "weight":
        if gate_inputs:
            raise ConfigError("gate_inputs applies to neuron granularity, not weight")
        return FoundGroups(
            GroupSpec(name, "weight", g.weight_count, (name,)) for name, g in geometry.items()
        )
    groups = _structured_groups(model, input_shape, _STRUCTURED_KINDS[granularity], geometry)
    if gate_inputs:
        if "neuron" not in _STRUCTURED_KINDS[granularity]:
            raise ConfigError(
                "gate_inputs needs a granularity with neurons (neuron or channel+neuron)"
            )
        groups.insert(0, _input_group(model, geometry))
    _check_found(groups, granularity)
    groups[:] = [_with_site_outputs(g, geometry) for g in groups]
    return groups


def _with_site_outputs(group: GroupSpec, geometry: dict[str, LayerGeometry]) -> GroupSpec:
    outputs = tuple(
        geometry[s].macs // (geometry[s].weight_count // geometry[s].out_width)
        if s in geometry
        else 0
        for s in group.mask_sites
    )
    return replace(group, site_outputs=outputs)


def _check_found(groups: FoundGroups, granularity: str) -> None:
    kinds = _STRUCTURED_KINDS[granularity]
    if not groups:
        refused = f" ({len(groups.refused)} refused: {groups.refused[0]})" if groups.refused else ""
        raise GranularityError(
            f"granularity {granularity!r} finds nothing to prune in this model: it has no "
            f"{' or '.join(_describe(k) for k in kinds)} it can gate besides the classifier"
            f"{refused}; use a granularity it has (e.g. weight)"
        )
    missing = [k for k in kinds if not any(g.kind == k for g in groups)]
    if missing:
        raise GranularityError(
            f"granularity {granularity!r} needs {_describe(missing[0])} to prune but this model "
            f"has none; choose {'neuron' if missing[0] == 'channel' else 'channel'} instead"
        )


def _describe(kind: str) -> str:
    return {"neuron": "hidden Linear layers", "channel": "Conv2d layers"}[kind]


def _kind(root: nn.Module, geometry: LayerGeometry, kinds: tuple[str, ...]) -> str:
    """Convolutions switch channels; Linear layers on channels-last images too when the
    granularity has channels (pointwise convolutions), else neurons; other Linear layers
    switch neurons."""
    if isinstance(root, nn.Conv2d):
        return "channel"
    if geometry.extra.get("channels_last") and "channel" in kinds:
        return "channel"
    return "neuron"


def _structured_groups(
    model: nn.Module,
    input_shape: tuple[int, ...],
    kinds: tuple[str, ...],
    geometry: dict[str, LayerGeometry],
) -> FoundGroups:
    graph = build_dependency_graph(model, input_shape)
    names = {module: name for name, module in model.named_modules()}
    classifier = classifier_layer(model)
    order = list(geometry)
    groups, refused = [], []
    for root, group in candidate_groups(graph, classifier, names):
        if names.get(root) not in geometry:
            continue
        kind = _kind(root, geometry[names[root]], kinds)
        if kind not in kinds:
            continue
        reason = group if isinstance(group, str) else refusal(graph, group, names)
        repeat = channel_groups(group) if reason is None else None
        if reason is None and repeat is None:
            reason = "its convolution groups cannot be kept equally wide along this path"
        if reason is not None:
            layers = [root] if isinstance(group, str) else producer_layers(graph, group, classifier)
            refused += [
                f"layer {names[m]!r} ({type(m).__name__}) is not gated: {reason}" for m in layers
            ]
            continue
        spec = _group_spec(graph, group, names, kind)
        groups.append(_with_repeat(spec, repeat))
    found = FoundGroups(sorted(groups, key=lambda g: order.index(g.name)))
    found.refused = tuple(dict.fromkeys(refused))
    return found


def _with_repeat(spec: GroupSpec, repeat: int) -> GroupSpec:
    if repeat == 1:
        return spec
    return GroupSpec(
        spec.name,
        spec.kind,
        spec.size // repeat,
        spec.producers,
        spec.consumers,
        spec.mask_sites,
        repeat,
        spec.site_channels,
    )


def _group_spec(graph: tp.DependencyGraph, group: Any, names: dict, kind: str) -> GroupSpec:
    root = group[0].dep.target.module
    size = len(group[0].idxs)
    producers, consumers, norms = [], [], {}
    for item in group:
        module = item.dep.target.module
        outgoing = graph.is_out_channel_pruning_fn(item.dep.handler)
        if isinstance(module, PRUNABLE_TYPES):
            if outgoing:
                producers.append(names[module])
            else:
                width = module.in_channels if isinstance(module, nn.Conv2d) else module.in_features
                consumers.append(Consumer(names[module], len(item.idxs) / width))
        elif outgoing and isinstance(module, nn.modules.batchnorm._BatchNorm):
            norms[module] = tuple(getattr(i, "idx", i) for i in item.idxs)
    producers = list(dict.fromkeys(producers))
    sites = [
        _mask_site(graph, names, dict(graph.model.named_modules())[p], norms) for p in producers
    ]
    # a BatchNorm further on (DenseNet's norm after a concatenation) turns a masked zero into
    # its shift: mask after it too, so a dropped channel stays zero wherever it is consumed
    further = [n for n in norms if names[n] not in sites]
    channels = [()] * len(sites) + [norms[n] for n in further]
    return GroupSpec(
        names[root],
        kind,
        size,
        tuple(producers),
        tuple(dict.fromkeys(consumers)),
        tuple(sites + [names[n] for n in further]),
        site_channels=tuple(channels),
    )


def _mask_site(graph: tp.DependencyGraph, names: dict, layer: nn.Module, norms: set) -> str:
    """Mask after the BatchNorm that normalises the layer, if any: masking before it would be
    undone by the normalisation, and a mask after it folds exactly into its affine terms."""
    for node in graph.module2node[layer].outputs:
        if node.module in norms:
            return names[node.module]
    return names[layer]


def _input_group(model: nn.Module, geometry: dict[str, LayerGeometry]) -> GroupSpec:
    first_name = next(iter(geometry))
    first = geometry[first_name]
    if first.kind != "linear":
        raise ConfigError(
            "gate_inputs gates the input features of a first Linear layer, but this model "
            f"starts with a convolution ({first_name}); drop gate_inputs"
        )
    return GroupSpec("input", "input", first.in_width, (), (Consumer(first_name, 1.0),))
