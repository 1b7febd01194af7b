"""The pre-flight check: does the space's model have something to gate at every granularity
the space may pick? Build the model once and ask, before any trial starts.

The model is built for the data's geometry as the data set's registry entry states it, so no
data is loaded here unless an entry cannot tell its geometry without loading.
"""

from __future__ import annotations

from typing import Any

from archsearch.config import TrialConfig
from archsearch.data import get_dataset_info, load_dataset
from archsearch.errors import ConfigError, UnknownNameError
from archsearch.models import create_model
from archsearch.pruning.groups import find_groups
from archsearch.space.check import Check
from archsearch.space.spec import INPUT_GATING_GRANULARITIES, SPACE_FIELDS, Param


def check_model(base: TrialConfig, params: tuple[Param, ...], check: Check) -> None:
    """Build the model once and find its groups at every granularity the space may pick."""
    shape, classes = data_geometry(base)
    try:
        model = create_model(base.model, shape, classes, **base.model_options)
    except UnknownNameError as error:
        check.fail("model.name", str(error))
    except ConfigError as error:
        check.fail("model.options", str(error))
    searched = {p.name: p for p in params}
    granularities, gran_key = _values_of("granularity", searched, base)
    inputs, inputs_key = _values_of("gate_inputs", searched, base)
    for granularity in granularities:
        _groups(model, shape, granularity, False, gran_key, check)
    if True not in inputs:
        return
    able = [g for g in granularities if g in INPUT_GATING_GRANULARITIES]
    if not able or ("gate_inputs" not in searched and len(able) < len(granularities)):
        check.fail(inputs_key, "true needs granularity neuron or channel+neuron in every trial")
    for granularity in able:
        _groups(model, shape, granularity, True, inputs_key, check)


def data_geometry(base: TrialConfig) -> tuple[tuple[int, ...], int]:
    """Input shape and class count from the data set's registry entry; a data set whose entry
    cannot tell is loaded once (slower, but always right)."""
    geometry = get_dataset_info(base.data).geometry(base.data_options)
    if geometry is not None:
        return geometry
    splits = load_dataset(
        base.data, root=base.data_root, val_fraction=base.val_fraction, **base.data_options
    )
    return splits.input_shape, splits.num_classes


def _values_of(
    name: str, searched: dict[str, Param], base: TrialConfig
) -> tuple[tuple[Any, ...], str]:
    if name in searched:
        return searched[name].values, f"space.{name}"
    return (getattr(base, SPACE_FIELDS[name]),), f"train.{SPACE_FIELDS[name]}"


def _groups(
    model: Any, shape: tuple[int, ...], granularity: str, inputs: bool, key: str, check: Check
) -> None:
    try:
        find_groups(model, shape, granularity, gate_inputs=inputs)
    except ConfigError as error:
        check.fail(key, str(error))
