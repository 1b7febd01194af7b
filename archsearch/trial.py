"""``run_trial``: the one trial function, free of Ray and MLflow.

build model → attach gates (method × granularity) → warm-up → train with penalty → harden →
fine-tune → evaluate (validation split; the test set is reported, never optimised on) →
count FLOPs with fvcore on the hardened module → time it against the dense model
(``archsearch.latency``) → metrics, description, weights.

``archsearch train`` calls it for one trial; the search calls it once per sampled point.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archsearch.config import TrialConfig
from archsearch.cost_gap import cost_gap_is_large
from archsearch.data import DataSplits, load_dataset
from archsearch.errors import ConfigError, first_line
from archsearch.latency import LatencyError, LatencySettings, measure_latency, sparse_latency
from archsearch.memory_format import channels_last_on_cpu
from archsearch.models import (
    aux_head_params,
    check_output,
    create_model,
    drop_aux_heads,
    load_dense_weights,
)
from archsearch.pruning.cost import CostModel
from archsearch.pruning.flops import FlopReport, count_flops, count_nonzero_params, count_params
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry
from archsearch.pruning.harden import HardenedModel, harden
from archsearch.subnetwork import (
    dense_widths,
    describe_subnetwork,
    input_keep_map,
    save_subnetwork,
    write_json,
)
from archsearch.torchvision_models import AUX_HEAD_MODELS, TORCHVISION_PREFIX
from archsearch.train import (
    EpochCallback,
    TrainingRun,
    accuracy,
    finetune,
    pretrain,
    train_dense,
    train_gated,
)


@dataclass
class TrialResult:
    metrics: dict[str, Any]
    subnetwork: dict[str, Any]
    history: list[dict[str, Any]]
    model: nn.Module


@dataclass
class _Built:
    """The gated model, its cost model, and the dense model's figures taken before gating."""

    gated: GatedModel
    cost: CostModel
    input_shape: tuple[int, ...]
    dense_flops: int
    dense_params: int
    dense_widths: dict[str, tuple[int, int]]
    #: the dense network as the trial started, for ``distill_weight``; None without it
    teacher: nn.Module | None = None


@dataclass
class _Trained:
    hardened: HardenedModel
    history: list[dict[str, Any]]
    seconds: float


def resolve_device(requested: str) -> torch.device:
    """CUDA when a GPU is visible (Ray sets CUDA_VISIBLE_DEVICES for a trial given one)."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda' but no CUDA GPU is visible; use --device auto or cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


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
    built = _build(config, data, device)
    trained = _train(built, config, data, on_epoch)
    subnet = trained.hardened.model.eval()
    flops, metrics = _measure(subnet, built, trained, config, data)
    started = time.perf_counter()
    metrics.update(_latency(subnet, built, config, data.num_classes, device))
    if "latency_ratio" in metrics:  # what timing cost the trial, beside train_seconds
        metrics["latency_seconds"] = time.perf_counter() - started
    description = _describe(subnet, built, trained.hardened, flops, config, data)
    description["latency"] = {k: v for k, v in metrics.items() if "latency" in k}
    subnet = subnet.cpu()
    if out_dir is not None:
        _write(out_dir, description, subnet, metrics, trained.history)
    return TrialResult(metrics, description, trained.history, subnet)


def build_model(config: TrialConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The dense model, checked to give one score per class, with ``init_weights`` loaded."""
    model = create_model(config.model, input_shape, num_classes, **config.model_options)
    check_output(model, config.model, input_shape, num_classes)
    if config.init_weights is not None:
        load_dense_weights(model, config.init_weights, config.model)
    return model


def measure_reference(config: TrialConfig, data: DataSplits | None = None) -> dict[str, Any]:
    """The dense network as loaded from ``init_weights``, untrained here: its validation and
    test accuracy and FLOPs, the reference point a search's pruned networks are compared to."""
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    data = _to_device(data or load_data(config), device)
    model = build_model(config, data.input_shape, data.num_classes).to(device).eval()
    return {
        "val_accuracy": accuracy(model, data, "val"),
        "test_accuracy": accuracy(model, data, "test"),
        "flops": count_flops(model, data.input_shape).total,
    }


@dataclass
class DenseReference:
    """The dense network a search compares its pruned trials with: its figures (validation
    and test accuracy, FLOPs, parameters, training seconds) and, when trained here, its
    weights (CPU tensors; ``init: {from: reference}`` starts the trials from them)."""

    metrics: dict[str, Any]
    weights: dict[str, torch.Tensor]


def dense_reference(
    config: TrialConfig,
    data: DataSplits | None = None,
    threads: int | None = None,
    on_epoch: EpochCallback | None = None,
) -> DenseReference:
    """The search's dense reference: the network of ``init_weights`` measured as loaded, or,
    without them, the network a trial starts from (same seed) trained without gates on the
    trial's schedule (``train.train_dense``: ``epochs`` + ``finetune_epochs``). ``threads``:
    torch's, as a search trial sets them; ``on_epoch`` is told of each epoch (a search
    training it in its own process stops there when its time budget is spent)."""
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    device = resolve_device(config.device)
    data = _to_device(data or load_data(config), device)
    model = build_model(config, data.input_shape, data.num_classes).to(device)
    trained = config.init_weights is None
    started = time.perf_counter()
    if trained:
        generator = torch.Generator().manual_seed(config.seed)
        with channels_last_on_cpu(model):
            train_dense(model, TrainingRun(config, data, generator, on_epoch))
    metrics = {
        "val_accuracy": accuracy(model, data, "val"),
        "test_accuracy": accuracy(model, data, "test"),
        "flops": count_flops(model.eval(), data.input_shape).total,
        "params": count_params(model) - aux_head_params(model),
    }
    if not trained:
        return DenseReference(metrics, {})
    metrics["train_seconds"] = time.perf_counter() - started
    weights = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return DenseReference(metrics, weights)


def _build(config: TrialConfig, data: DataSplits, device: torch.device) -> _Built:
    """The model with its gates attached, and the dense figures the results are compared to."""
    shape = data.input_shape
    model = build_model(config, shape, data.num_classes).to(device)
    geometry = layer_geometry(model, shape)
    groups = find_groups(
        model, shape, config.granularity, gate_inputs=config.gate_inputs, geometry=geometry
    )
    dense_flops = count_flops(model, shape).total
    dense_params = count_params(model) - aux_head_params(model)
    widths = dense_widths(model)
    teacher = _teacher(model, config)
    gated = GatedModel(model, groups, config.gate, config.gate_options).to(device)
    cost = CostModel(geometry, groups, config.penalty_cost)
    return _Built(gated, cost, shape, dense_flops, dense_params, widths, teacher)


def check_teacher(config: TrialConfig) -> None:
    """Distillation needs a trained dense network to learn from: the one a trial loads."""
    if config.distill_weight > 0 and config.init_weights is None:
        raise ConfigError(
            "distill_weight needs the trained dense network a trial starts from: set "
            "init_weights (a search's init: {from: reference} does)"
        )


def _teacher(model: nn.Module, config: TrialConfig) -> nn.Module | None:
    """A frozen copy of the trained dense network, before the gates train it further."""
    check_teacher(config)
    if config.distill_weight == 0:
        return None
    teacher = copy.deepcopy(model).eval()
    drop_aux_heads(teacher)
    return teacher.requires_grad_(False)


def _train(
    built: _Built, config: TrialConfig, data: DataSplits, on_epoch: EpochCallback | None
) -> _Trained:
    """Warm-up, gated training, hardening and fine-tuning, on one shuffling stream."""
    run = TrainingRun(config, data, torch.Generator().manual_seed(config.seed), on_epoch)
    started = time.perf_counter()
    with channels_last_on_cpu(built.gated.base):
        history = pretrain(built.gated, run)
        history += train_gated(built.gated, built.cost, run)
    hardened = harden(built.gated, built.input_shape)
    drop_aux_heads(hardened.model)  # training-only heads the eval-mode pruning did not see
    with channels_last_on_cpu(hardened.model):
        history += finetune(hardened.model, run, built.teacher)
    return _Trained(hardened, history, time.perf_counter() - started)


def _measure(
    subnet: nn.Module, built: _Built, trained: _Trained, config: TrialConfig, data: DataSplits
) -> tuple[FlopReport, dict[str, Any]]:
    """Accuracy, FLOPs and parameters of the fine-tuned subnetwork against the dense model."""
    hardened = trained.hardened
    hardened.densities = _densities(subnet, hardened.densities)
    flops = count_flops(subnet, built.input_shape, densities=hardened.densities or None)
    weight_level = config.granularity == "weight"
    params = count_nonzero_params(subnet) if weight_level else count_params(subnet)
    metrics = {
        "val_accuracy": accuracy(subnet, data, "val"),
        "test_accuracy": accuracy(subnet, data, "test"),
        "flops": flops.total,
        "flops_ratio": flops.total / built.dense_flops,
        "dense_flops": built.dense_flops,
        "params": params,
        "params_ratio": params / built.dense_params,
        "dense_params": built.dense_params,
        "train_seconds": trained.seconds,
        "degenerate": bool(hardened.degenerate_groups),
        **_cost_gap(trained.history),
    }
    return flops, metrics


def _latency(
    subnet: nn.Module, built: _Built, config: TrialConfig, classes: int, device: torch.device
) -> dict[str, Any]:
    """The subnetwork timed against a dense model of the same architecture, in the same
    process and interleaved (weights do not matter to the time, so the dense model is built
    fresh); a weight-sparse one also through the runtime's sparse kernels."""
    settings = LatencySettings(
        runtime=config.latency_runtime,
        batch=config.latency_batch,
        repeats=config.latency_repeats,
        threads=config.latency_threads,
    )
    if settings.runtime == "off":
        return {}
    dense = create_model(config.model, built.input_shape, classes, **config.model_options)
    drop_aux_heads(dense)
    dense = dense.to(device).eval()
    try:
        measured = measure_latency(subnet, dense, built.input_shape, settings, device)
    except LatencyError as error:  # a layer ONNX cannot express: timed in torch, and said so
        settings = dataclasses.replace(settings, runtime="torch")
        measured = measure_latency(subnet, dense, built.input_shape, settings, device)
        cause = first_line(error.__cause__ or error)[:160]
        measured["latency_runtime"] += f" (the ONNX export failed: {cause})"
    if config.granularity == "weight":
        measured.update(sparse_latency(subnet.cpu(), dense.cpu(), built.input_shape, settings))
        subnet.to(device)
    return measured


def _cost_gap(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last gated epoch's expected and hardened cost, and whether they stayed apart: the
    gates then optimised a network other than the one shipped (``cost_gap_is_large``)."""
    gated = [record for record in history if record["phase"] == "gated"]
    if not gated:
        return {}
    expected, hard = gated[-1]["expected_cost_ratio"], gated[-1]["hard_cost_ratio"]
    return {
        "expected_cost_ratio": expected,
        "hard_cost_ratio": hard,
        "cost_gap": hard - expected,
        "cost_gap_large": cost_gap_is_large(expected, hard),
    }


def _describe(
    subnet: nn.Module,
    built: _Built,
    hardened: HardenedModel,
    flops: FlopReport,
    config: TrialConfig,
    data: DataSplits,
) -> dict[str, Any]:
    """subnetwork.json: what was kept, how to rebuild it, and the trial that produced it."""
    return describe_subnetwork(
        hardened,
        model_name=config.model,
        model_options=_rebuild_options(config.model, config.model_options),
        input_shape=built.input_shape,
        num_classes=data.num_classes,
        flops=flops,
        dense_flops=built.dense_flops,
        dense_widths=built.dense_widths,
        extra={
            "gate": config.gate,
            "granularity": config.granularity,
            "data": config.data,
            "input_features_kept": input_keep_map(subnet),
            "trial_config": config.to_dict(),
        },
    )


def _rebuild_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """The model options that rebuild the hardened module: a torchvision model's without
    ``aux_weight``, whose auxiliary heads hardening removed (``models.drop_aux_heads``)."""
    if name.removeprefix(TORCHVISION_PREFIX) not in AUX_HEAD_MODELS:
        return options
    return {k: v for k, v in options.items() if k != "aux_weight"}


def _write(
    out_dir: Path,
    description: dict[str, Any],
    subnet: nn.Module,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
) -> None:
    save_subnetwork(out_dir, description, subnet)
    write_json(out_dir / "metrics.json", metrics)
    write_json(out_dir / "history.json", history)


def _densities(model: nn.Module, gated_densities: dict[str, float]) -> dict[str, float]:
    """Measured after fine-tuning (zeros are kept zero there), for the layers that were gated."""
    modules = dict(model.named_modules())
    return {name: float((modules[name].weight != 0).float().mean()) for name in gated_densities}


def _to_device(data: DataSplits, device: torch.device) -> DataSplits:
    """In-memory splits move to ``device`` once; streamed ones are read by DataLoader workers,
    one per CPU the trial has beyond its own (the search sets torch's threads to them)."""
    return data.to(device, num_workers=max(0, torch.get_num_threads() - 1))
