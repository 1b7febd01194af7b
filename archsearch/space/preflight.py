"""The pre-flight check: does the space's model build, give one score per class, take its
trained weights and have something to gate at every granularity the space may pick? Build the
model once and ask, before any trial starts.

What it finds is also the report a user reads before the search: the gate groups per
granularity, the dense FLOPs, and each layer that will not be pruned or not be counted, so a
model of their own holds no surprise after hours of trials.

The model is built for the data's geometry as the data set's registry entry states it, so no
data is loaded here unless an entry cannot tell its geometry without loading.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn

from archsearch.config import TrialConfig
from archsearch.data import get_dataset_info, load_dataset
from archsearch.errors import ArchSearchError, ConfigError
from archsearch.models import (
    check_output,
    classifier_layer,
    create_model,
    get_model_info,
    load_dense_weights,
)
from archsearch.pruning.cost import CostModel
from archsearch.pruning.flops import count_flops, count_params
from archsearch.pruning.groups import GroupSpec, LayerGeometry, find_groups, layer_geometry
from archsearch.space.check import Check
from archsearch.space.spec import INPUT_GATING_GRANULARITIES, SPACE_FIELDS, Param

#: what each kind of group switches, as the report counts it
_UNITS = {
    "weight": "weights",
    "channel": "channels",
    "neuron": "neurons",
    "input": "input features",
}

#: a granularity's FLOPs floor (``flops_floor``) the report mentions: from a tenth up, the
#: share of the FLOPs under which budgets are commonly asked
FLOOR_WORTH_SAYING = 0.1

#: the layers a granularity gates (its structured kinds' layer types)
_GATED_TYPES: dict[str, tuple[type[nn.Module], ...]] = {
    "weight": (nn.Conv2d, nn.Linear),
    "neuron": (nn.Linear,),
    "channel": (nn.Conv2d,),
    "channel+neuron": (nn.Conv2d, nn.Linear),
}


def check_model(base: TrialConfig, params: tuple[Param, ...], check: Check) -> tuple[str, ...]:
    """Build the model once, check it and find its groups at every granularity the space may
    pick; returns the pre-flight report, one line each."""
    shape, classes = data_geometry(base)
    model = _build(base, shape, classes, check)
    geometry = layer_geometry(model, shape)
    searched = {p.name: p for p in params}
    granularities, gran_key = _values_of("granularity", searched, base)
    inputs, inputs_key = _values_of("gate_inputs", searched, base)
    found = {g: _groups(model, shape, g, False, gran_key, check, geometry) for g in granularities}
    if True in inputs:
        able = [g for g in granularities if g in INPUT_GATING_GRANULARITIES]
        if not able or ("gate_inputs" not in searched and len(able) < len(granularities)):
            check.fail(inputs_key, "true needs granularity neuron or channel+neuron in every trial")
        for granularity in able:
            groups = _groups(model, shape, granularity, True, inputs_key, check, geometry)
            found[f"{granularity} with gate_inputs"] = groups
    return _report(model, base, shape, classes, found, geometry, check)


def data_geometry(base: TrialConfig) -> tuple[tuple[int, ...], int]:
    """Input shape and class count from the data set's registry entry; a data set whose entry
    cannot tell is loaded once (slower, but always right)."""
    geometry = get_dataset_info(base.data).geometry_at(base.data_root, base.data_options)
    if geometry is not None:
        return geometry
    splits = load_dataset(
        base.data, root=base.data_root, val_fraction=base.val_fraction, **base.data_options
    )
    return splits.input_shape, splits.num_classes


def _build(base: TrialConfig, shape: tuple[int, ...], classes: int, check: Check) -> nn.Module:
    """The dense model as a trial builds it; each failure names the key that caused it."""
    key = "model.name"
    try:
        get_model_info(base.model)  # the name resolves: registered, or the user's module imports
        key = "model.options" if base.model_options else "model.name"
        model = create_model(base.model, shape, classes, **base.model_options)
        key = "model.name"
        check_output(model, base.model, shape, classes)
    except ConfigError as error:
        check.fail(key, str(error))
    if base.init_weights is not None:
        try:
            load_dense_weights(model, base.init_weights, base.model)
        except ConfigError as error:
            check.fail("init.weights", str(error))
    return model


def _values_of(
    name: str, searched: dict[str, Param], base: TrialConfig
) -> tuple[tuple[Any, ...], str]:
    if name in searched:
        return searched[name].values, f"space.{name}"
    return (getattr(base, SPACE_FIELDS[name]),), f"train.{SPACE_FIELDS[name]}"


def _groups(
    model: nn.Module,
    shape: tuple[int, ...],
    granularity: str,
    inputs: bool,
    key: str,
    check: Check,
    geometry: dict[str, LayerGeometry],
) -> list[GroupSpec]:
    try:
        return find_groups(model, shape, granularity, gate_inputs=inputs, geometry=geometry)
    except ConfigError as error:
        check.fail(key, str(error))


# -- the report ---------------------------------------------------------------------------


def _report(
    model: nn.Module,
    base: TrialConfig,
    shape: tuple[int, ...],
    classes: int,
    found: dict[str, list[GroupSpec]],
    geometry: dict[str, LayerGeometry],
    check: Check,
) -> tuple[str, ...]:
    try:
        flops = count_flops(model, shape)
    except ArchSearchError as error:  # an operator fvcore cannot count: no FLOPs objective
        check.fail("model.name", str(error))
    size = "x".join(map(str, shape))
    lines = [
        f"model {base.model!r} for {size} inputs and {classes} classes: "
        f"{count_params(model):,} parameters, {flops.total:,} FLOPs dense "
        "(fvcore, one input, one multiply-accumulate = one flop)"
    ]
    if base.init_weights is not None:
        lines.append(f"starts from the trained weights in {base.init_weights}")
    for label, groups in found.items():
        lines.append(f"{label}: {_summary(groups)}")
        floor = flops_floor(groups, geometry)
        if floor >= FLOOR_WORTH_SAYING:
            lines.append(
                f"{label}: no trial can go below {100 * floor:.0f}% of the dense FLOPs: the "
                "layers it gates hold the rest (and each group keeps one element)"
            )
        granularity = label.split()[0]
        lines += [f"{label}: {line}" for line in _not_gated(model, granularity, groups, geometry)]
    lines += _not_run(model, geometry)
    lines += _not_counted(model, flops.per_layer)
    return tuple(lines)


def flops_floor(groups: list[GroupSpec], geometry: dict[str, LayerGeometry]) -> float:
    """The least share of the dense FLOPs a granularity can reach: one element of every group
    kept, as hardening keeps at least one unit of a layer, and every layer it does not gate
    whole. A granularity whose floor is high cannot answer a small budget, however long it
    trains (neurons of LeNet-5-Caffe: 82%, its fully connected layers holding 18%)."""
    keep = {}
    for group in groups:
        mask = torch.zeros(group.size)
        mask[0] = 1.0
        keep[group.name] = mask
    return float(CostModel(geometry, groups).ratio(keep)) if groups else 1.0


def _summary(groups: list[GroupSpec]) -> str:
    """``3 groups, 84 channels``; weight granularity counts layers and weights."""
    sizes: dict[str, int] = {}
    for group in groups:
        sizes[group.kind] = sizes.get(group.kind, 0) + group.size
    what = " + ".join(f"{size:,} {_UNITS[kind]}" for kind, size in sizes.items())
    noun = "layer" if set(sizes) == {"weight"} else "group"
    return f"{len(groups)} {noun}{'s' if len(groups) != 1 else ''}, {what}"


_LAYER_NAME = re.compile(r"^layer '([^']+)'")


def _not_gated(
    model: nn.Module, granularity: str, groups: list[GroupSpec], geometry: dict[str, Any]
) -> list[str]:
    """Layers this granularity switches that no group covers: Torch-Pruning found nothing of
    them it can remove (the classifier's outputs are the classes and are never gated)."""
    if granularity == "weight":
        return []  # every layer that runs is gated weight by weight
    refused = list(getattr(groups, "refused", ()))  # find_groups' own reasons, layer by layer
    covered = {name for group in groups for name in group.producers}
    covered |= {match.group(1) for line in refused if (match := _LAYER_NAME.match(line))}
    classifier = classifier_layer(model)
    return refused + [
        f"layer {name!r} ({type(module).__name__}) is not gated: Torch-Pruning finds no "
        f"{_UNITS['channel' if isinstance(module, nn.Conv2d) else 'neuron']} of it to remove"
        for name, module in model.named_modules()
        if isinstance(module, _GATED_TYPES[granularity])
        and module is not classifier
        and name in geometry
        and name not in covered
    ]


def _not_run(model: nn.Module, geometry: dict[str, Any]) -> list[str]:
    return [
        f"layer {name!r} ({type(module).__name__}) does not run on an input: never gated"
        for name, module in model.named_modules()
        if isinstance(module, (nn.Conv2d, nn.Linear)) and name not in geometry
    ]


def _not_counted(model: nn.Module, per_layer: dict[str, int]) -> list[str]:
    """Layers holding weights that fvcore gives no FLOPs: the FLOPs objective leaves them out."""
    return [
        f"layer {name!r} ({type(module).__name__}): fvcore counts no FLOPs for it, so the "
        "FLOPs objective leaves it out"
        for name, module in model.named_modules()
        if next(module.children(), None) is None
        and next(module.parameters(recurse=False), None) is not None
        and not isinstance(module, (nn.Conv2d, nn.Linear))  # counted, or in _not_run
        and name not in per_layer
    ]
