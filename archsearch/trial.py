"""``run_trial``: the one trial function, free of Ray and MLflow.

build model → attach gates (method × granularity) → warm-up → train with penalty → harden →
fine-tune → evaluate (validation split; the test set is reported, never optimised on) →
count FLOPs with fvcore on the hardened module → metrics, description, weights.

``archsearch train`` calls it for one trial; the search calls it once per sampled point.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archsearch.config import TrialConfig
from archsearch.data import DataSplits, load_dataset
from archsearch.errors import ConfigError
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.flops import count_flops, count_nonzero_params, count_params
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry
from archsearch.pruning.harden import harden
from archsearch.subnetwork import (
    dense_widths,
    describe_subnetwork,
    input_keep_map,
    save_subnetwork,
    write_json,
)
from archsearch.train import TrainSettings, evaluate, finetune, pretrain, train_gated

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass
class TrialResult:
    metrics: dict[str, Any]
    subnetwork: dict[str, Any]
    history: list[dict[str, Any]]
    model: nn.Module


def resolve_device(requested: str) -> torch.device:
    """CUDA when a GPU is visible (Ray sets CUDA_VISIBLE_DEVICES for a trial given one)."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' but no CUDA GPU is visible; use --device auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def settings_of(config: TrialConfig) -> TrainSettings:
    return TrainSettings(
        epochs=config.epochs,
        finetune_epochs=config.finetune_epochs,
        pretrain_epochs=config.resolved_pretrain_epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        gate_lr=config.gate_lr,
        penalty_lambda=config.penalty_lambda,
        penalty_target=config.penalty_target,
    )


def load_data(config: TrialConfig) -> DataSplits:
    return load_dataset(
        config.data,
        root=config.data_root,
        val_fraction=config.val_fraction,
        seed=config.seed,
        **config.data_options,
    )


def run_trial(
    config: TrialConfig,
    *,
    out_dir: Path | None = None,
    on_epoch: EpochCallback | None = None,
    data: DataSplits | None = None,
) -> TrialResult:
    """Run one trial end to end; writes metrics.json, subnetwork.json, weights.safetensors
    and history.json into ``out_dir`` when given. ``data`` lets callers reuse loaded splits."""
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    data = _to_device(data or load_data(config), device)
    shape = data.input_shape
    model = create_model(config.model, shape, data.num_classes, **config.model_options).to(device)
    geometry = layer_geometry(model, shape)
    groups = find_groups(
        model, shape, config.granularity, gate_inputs=config.gate_inputs, geometry=geometry
    )
    dense_flops = count_flops(model, shape).total
    dense_params = count_params(model)
    widths = dense_widths(model)
    gated = GatedModel(model, groups, config.gate, config.gate_options).to(device)
    cost = CostModel(geometry, groups, config.penalty_cost)
    settings = settings_of(config)
    generator = torch.Generator().manual_seed(config.seed)

    started = time.perf_counter()
    history = pretrain(gated, data, settings, generator, on_epoch)
    history += train_gated(gated, cost, data, settings, generator, on_epoch)
    hardened = harden(gated, shape)
    history += finetune(hardened.model, data, settings, generator, on_epoch)
    train_seconds = time.perf_counter() - started

    subnet = hardened.model.eval()
    hardened.densities = _densities(subnet, hardened.densities)
    flops = count_flops(subnet, shape, densities=hardened.densities or None)
    weight_level = config.granularity == "weight"
    params = count_nonzero_params(subnet) if weight_level else count_params(subnet)
    metrics = {
        "val_accuracy": evaluate(subnet, data.val_x, data.val_y),
        "test_accuracy": evaluate(subnet, data.test_x, data.test_y),
        "flops": flops.total,
        "flops_ratio": flops.total / dense_flops,
        "dense_flops": dense_flops,
        "params": params,
        "params_ratio": params / dense_params,
        "dense_params": dense_params,
        "train_seconds": train_seconds,
        "degenerate": bool(hardened.degenerate_groups),
    }
    description = describe_subnetwork(
        hardened,
        model_name=config.model,
        model_options=config.model_options,
        input_shape=shape,
        num_classes=data.num_classes,
        flops=flops,
        dense_flops=dense_flops,
        dense_widths=widths,
        extra={
            "gate": config.gate,
            "granularity": config.granularity,
            "data": config.data,
            "input_features_kept": input_keep_map(subnet),
            "trial_config": config.to_dict(),
        },
    )
    subnet = subnet.cpu()
    if out_dir is not None:
        save_subnetwork(out_dir, description, subnet)
        write_json(out_dir / "metrics.json", metrics)
        write_json(out_dir / "history.json", history)
    return TrialResult(metrics, description, history, subnet)


def _densities(model: nn.Module, gated_densities: dict[str, float]) -> dict[str, float]:
    """Measured after fine-tuning (zeros are kept zero there), for the layers that were gated."""
    modules = dict(model.named_modules())
    return {name: float((modules[name].weight != 0).float().mean()) for name in gated_densities}


def _to_device(data: DataSplits, device: torch.device) -> DataSplits:
    tensors = {
        f.name: getattr(data, f.name).to(device)
        for f in dataclasses.fields(data)
        if isinstance(getattr(data, f.name), torch.Tensor)
    }
    return dataclasses.replace(data, **tensors)
