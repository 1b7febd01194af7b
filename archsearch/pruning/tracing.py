"""Torch-Pruning's dependency graph, traced so that no failure of it reaches a user.

Torch-Pruning couples channels across residual additions, concatenations and splits; where
it cannot follow them (a reshape it mis-infers, as in a channel shuffle) the groups it builds
are refused with a reason instead of failing the model, and every other failure becomes one
line naming the model or the layer.

Two costs are kept linear in the size of the graph. Torch-Pruning re-derives every index
mapping before each group it builds (seconds per group on a Swin); while listing the groups
nothing is removed, so the mapping of the trace is reused. And a reshape that regroups
channels into something else (attention heads, windows: Swin, MaxViT) gets a flatten
mapping that multiplies each index by its stride; where those reshapes form a cycle the index
lists grow by that stride on every pass (a million indices for a 768-wide Swin layer, minutes
per group). Only the flatten in front of a Linear layer (a classifier) is followed; a group
that reaches any other one is refused at that point, in one line.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import index_mapping
from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

from archsearch.errors import GranularityError, first_line

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)

REORDERED = (
    "its channels are reordered by a reshape (a channel shuffle, attention heads, windows) "
    "that Torch-Pruning cannot follow"
)


def candidate_groups(
    graph: tp.DependencyGraph, classifier: nn.Module, names: dict
) -> Iterator[tuple[nn.Module, Any]]:
    """Each prunable layer's output group, once per group (as Torch-Pruning's own listing),
    but a layer whose group Torch-Pruning cannot build yields the reason instead."""
    seen: set[nn.Module] = {classifier}
    for module in list(graph.module2node):
        if module in seen or not isinstance(module, PRUNABLE_TYPES):
            continue
        width = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        try:
            with tolerant_index_mapping(reuse=True):
                group = graph.get_pruning_group(module, _OUT_FNS[type(module)], list(range(width)))
        except UnfollowedReshape:
            seen.add(module)
            yield module, REORDERED
            continue
        except Exception as error:  # Torch-Pruning's own failure, as one line
            seen.add(module)
            yield (
                module,
                (
                    f"Torch-Pruning cannot follow its channels ({type(error).__name__}: "
                    f"{first_line(error)})"
                ),
            )
            continue
        outgoing = [
            item.dep.target.module
            for item in group
            if graph.is_out_channel_pruning_fn(item.dep.handler)
        ]
        if classifier in outgoing:
            seen.update(outgoing)
            continue  # coupled to the class scores: never pruned
        seen.update(outgoing)
        yield module, group


_OUT_FNS = {nn.Conv2d: tp.prune_conv_out_channels, nn.Linear: tp.prune_linear_out_channels}


def refusal(graph: tp.DependencyGraph, group: Any, names: dict) -> str | None:
    """Why removing some of the group's channels would change what the others compute."""
    for item in group:
        module, node = item.dep.target.module, item.dep.target
        if getattr(node, "archsearch_unmapped", False) and node.type.name != "RESHAPE":
            return (
                f"its channels pass a {node.type.name.lower()} whose parts Torch-Pruning cannot "
                "size, so which channels it removes there is unknown"
            )
        if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            return (
                f"its channels are normalised together by {type(module).__name__} "
                f"{names.get(module, '?')!r}, so removing some would change the others"
            )
        if _reorders_channels(item):
            return REORDERED
    return None


def _reorders_channels(item: Any) -> bool:
    """A reshape is safe as the flatten in front of a Linear layer, or when the channels stay
    its last axis (a Linear layer on a channels-last image folds the positions together);
    anything else (the view and transpose of a channel shuffle) moves channels where
    Torch-Pruning cannot see."""
    node = item.dep.target
    if node.type != tp.ops.OPTYPE.RESHAPE:
        return False
    if getattr(node, "archsearch_unmapped", False):
        return True
    if node.outputs and all(isinstance(o.module, nn.Linear) for o in node.outputs):
        return False
    grad_fn = node.grad_fn
    sizes = getattr(grad_fn, "_saved_self_sizes", None) or getattr(
        grad_fn, "_saved_self_sym_sizes", ()
    )
    sizes = tuple(int(d) for d in sizes)
    channels = len(item.idxs)
    channels_last = bool(sizes) and sizes[-1] == channels
    return not channels_last or (len(sizes) > 2 and sizes[1] == channels)


def channel_groups(group: Any) -> int | None:
    """How many convolution groups the channels must stay split into (1: none); None when a
    grouped convolution sees the channels through a remapping the gate cannot follow."""
    size = len(group[0].idxs)
    repeat = 1
    for item in group:
        module = item.dep.target.module
        if not isinstance(module, nn.Conv2d) or module.groups == 1 or _depthwise(module):
            continue
        if [getattr(i, "idx", i) for i in item.idxs] != list(range(size)):
            return None
        repeat = math.lcm(repeat, module.groups)
    return repeat if size % repeat == 0 else None


def _depthwise(conv: nn.Conv2d) -> bool:
    """Torch-Pruning's test: one filter per channel, its inputs coupled to its outputs."""
    return conv.groups == conv.out_channels and conv.out_channels > 1


def producer_layers(
    graph: tp.DependencyGraph, group: Any, classifier: nn.Module
) -> list[nn.Module]:
    layers = [
        item.dep.target.module
        for item in group
        if isinstance(item.dep.target.module, PRUNABLE_TYPES)
        and graph.is_out_channel_pruning_fn(item.dep.handler)
        and item.dep.target.module is not classifier
    ]
    return list(dict.fromkeys(layers))


def _trace_failure(model: nn.Module, error: BaseException) -> str:
    return (
        f"Torch-Pruning cannot trace the channels of {type(model).__name__} "
        f"({type(error).__name__}: {first_line(error)}); use granularity weight"
    )


def build_dependency_graph(model: nn.Module, input_shape: tuple[int, ...]) -> tp.DependencyGraph:
    """Torch-Pruning's dependency graph of ``model``; any failure of it is one line."""
    was_training = model.training
    try:
        model.eval()
        example = torch.zeros(1, *input_shape, device=device_of(model))
        with torch.enable_grad(), tolerant_index_mapping(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its notes on unwrapped parameters and the like
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example, verbose=False
            )
    except Exception as error:  # whatever Torch-Pruning raises, as one line
        raise GranularityError(_trace_failure(model, error)) from None
    finally:
        model.train(was_training)


#: Torch-Pruning's index-mapping updates per operator type (concatenation, split, reshape...)
_MAPPERS = {
    "CONCAT": "update_concat_index_mapping",
    "SPLIT": "update_split_index_mapping",
    "RESHAPE": "update_reshape_index_mapping",
    "UNBIND": "update_unbind_index_mapping",
    "EXPAND": "update_expand_index_mapping",
    "SLICE": "update_slice_index_mapping",
}


class UnfollowedReshape(Exception):
    """A group's channels reached a reshape that regroups them (not a flatten into a Linear)."""


def _refuse_regrouping(_idxs: Any) -> Any:
    """Stands in for the flatten mapping of a regrouping reshape: stops the group there."""
    raise UnfollowedReshape(REORDERED)


_REGROUPING_TYPES = ("RESHAPE", "EXPAND")


def _flattens_into_linear(node: Any) -> bool:
    return bool(node.outputs) and all(isinstance(o.module, nn.Linear) for o in node.outputs)


def _guard_regrouping(graph: tp.DependencyGraph) -> None:
    """Replace each flatten mapping that is not a flatten into a Linear layer (see the module
    docstring): followed, it multiplies the indices on every pass of a cycle."""
    for node in graph.module2node.values():
        for dep in node.dependencies:
            ends = [n for n in (dep.source, dep.target) if n.type.name in _REGROUPING_TYPES]
            if not ends or any(_flattens_into_linear(n) for n in ends):
                continue
            for i, mapping in enumerate(dep.index_mapping):
                if isinstance(mapping, _FlattenIndexMapping):
                    dep.index_mapping[i] = _refuse_regrouping


@contextlib.contextmanager
def tolerant_index_mapping(*, reuse: bool = False) -> Iterator[None]:
    """Map indices operator by operator, so one operator Torch-Pruning cannot infer (the
    ZeroDivisionError of a channel shuffle, the TypeError of a concatenation it cannot size
    in Swin-S) marks that node instead of failing the model.
    Torch-Pruning maps again for every group it builds: hold this around those calls too.
    ``reuse`` keeps a mapping already made on the graph (only while nothing is removed)."""
    original = index_mapping.update_index_mapping

    def update(graph: tp.DependencyGraph) -> None:
        if reuse and getattr(graph, "archsearch_mapped", False):
            return
        for node in graph.module2node.values():
            mapper = getattr(index_mapping, _MAPPERS.get(node.type.name, ""), None)
            if mapper is None:
                continue
            try:
                mapper(graph, node)
            except (ArithmeticError, TypeError):  # a split it cannot size (a None width)
                node.archsearch_unmapped = True
        _guard_regrouping(graph)
        graph.archsearch_mapped = True

    index_mapping.update_index_mapping = update
    try:
        yield
    finally:
        index_mapping.update_index_mapping = original


def device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")
