"""Training loops: dense warm-up, gated training with the cost penalty, fine-tuning, evaluation.

Batches are slices of in-memory tensors (``iterate_batches``): on a 2-core machine a
DataLoader's per-example collation costs more than the small models we train.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.data import DataSplits, iterate_batches
from archsearch.errors import DegenerateTrialError
from archsearch.pruning.cost import CostModel
from archsearch.pruning.gated_model import GatedModel

EpochCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 10
    finetune_epochs: int = 2
    pretrain_epochs: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    gate_lr: float = 1e-2
    penalty_lambda: float = 0.1
    penalty_target: float | None = None


def _adam(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """Adam with the fused kernel: one pass per tensor instead of ~8. A weight-granularity
    gate adds one parameter per weight, so the optimizer step is a real share of its cost."""
    return torch.optim.Adam(groups, fused=True)


def penalty(ratio: torch.Tensor, settings: TrainSettings) -> torch.Tensor:
    """lambda * ratio, or lambda * (ratio - target)^2 when a cost target is set."""
    if settings.penalty_target is None:
        return settings.penalty_lambda * ratio
    return settings.penalty_lambda * (ratio - settings.penalty_target) ** 2


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Accuracy in eval mode; restores the model's mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for xb, yb in iterate_batches(x, y, batch_size, shuffle=False):
        correct += int((model(xb).argmax(1) == yb).sum())
    model.train(was_training)
    return correct / max(1, len(y))


def _check_finite(loss: torch.Tensor, phase: str, epoch: int, step: int) -> None:
    if not math.isfinite(float(loss.detach())):
        raise DegenerateTrialError(
            f"loss became {float(loss.detach())} in {phase} epoch {epoch} step {step}; "
            "lower the learning rate or lambda"
        )


class _EpochStats:
    def __init__(self) -> None:
        self.loss = 0.0
        self.correct = 0
        self.seen = 0
        self.started = time.perf_counter()

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += float(loss) * len(y)
        self.correct += int((logits.argmax(1) == y).sum())
        self.seen += len(y)

    def record(self, phase: str, epoch: int) -> dict[str, Any]:
        return {
            "phase": phase,
            "epoch": epoch,
            "train_loss": self.loss / max(1, self.seen),
            "train_accuracy": self.correct / max(1, self.seen),
            "seconds": time.perf_counter() - self.started,
        }


def pretrain(
    gated: GatedModel,
    data: DataSplits,
    settings: TrainSettings,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, Any]]:
    """Dense warm-up of the base network (gates off): learned thresholds need trained weights."""
    if settings.pretrain_epochs == 0:
        return []
    gated.gating = False
    try:
        return _plain_epochs(
            gated.base, data, settings, settings.pretrain_epochs, "pretrain", generator, on_epoch
        )
    finally:
        gated.gating = True


def train_gated(
    gated: GatedModel,
    cost: CostModel,
    data: DataSplits,
    settings: TrainSettings,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, Any]]:
    """Cross-entropy plus the normalised cost penalty; ARM gates get their antithetic pass."""
    gated.calibrate()
    optimizer = _adam(
        [
            {"params": list(gated.base.parameters()), "lr": settings.lr},
            {"params": gated.gate_parameters(), "lr": settings.gate_lr},
        ]
    )
    steps_per_epoch = math.ceil(len(data.train_y) / settings.batch_size)
    total_steps = max(1, settings.epochs * steps_per_epoch - 1)
    history, step = [], 0
    gated.train()
    for epoch in range(1, settings.epochs + 1):
        stats = _EpochStats()
        for xb, yb in iterate_batches(
            data.train_x, data.train_y, settings.batch_size, shuffle=True, generator=generator
        ):
            gated.set_progress(min(1.0, step / total_steps))
            logits, loss = _gated_step(gated, cost, settings, optimizer, xb, yb, epoch, step)
            stats.add(loss, logits, yb)
            step += 1
        record = stats.record("gated", epoch)  # seconds: training steps only
        record.update(_gate_summary(gated, cost, data))
        history.append(record)
        if on_epoch:
            on_epoch(record)
    return history


def _gated_step(
    gated: GatedModel,
    cost: CostModel,
    settings: TrainSettings,
    optimizer: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    epoch: int,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = gated(xb)
    data_loss = F.cross_entropy(logits, yb)
    keep = gated.keep_probabilities(gated.last_scores)
    loss = data_loss + penalty(cost.ratio(keep), settings)
    _check_finite(loss, "gated", epoch, step)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if gated.two_pass:
        with torch.no_grad(), gated.antithetic():
            antithetic_loss = F.cross_entropy(gated(xb), yb)
        gated.add_two_pass_gradient(data_loss.item(), antithetic_loss.item())
    optimizer.step()
    gated.after_optimizer_step()
    return logits.detach(), data_loss.detach()


@torch.no_grad()
def _gate_summary(gated: GatedModel, cost: CostModel, data: DataSplits) -> dict[str, float]:
    masks = {k: v.float() for k, v in gated.hard_masks().items()}
    return {
        "val_accuracy": evaluate(gated, data.val_x, data.val_y),
        "expected_cost_ratio": float(cost.ratio(gated.keep_probabilities())),
        "hard_cost_ratio": float(cost.ratio(masks)),
    }


def finetune(
    model: nn.Module,
    data: DataSplits,
    settings: TrainSettings,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, Any]]:
    """Train the hardened subnetwork; weights that hardening zeroed stay zero."""
    return _plain_epochs(
        model,
        data,
        settings,
        settings.finetune_epochs,
        "finetune",
        generator,
        on_epoch,
        keep_zeros=True,
    )


def _plain_epochs(
    model: nn.Module,
    data: DataSplits,
    settings: TrainSettings,
    epochs: int,
    phase: str,
    generator: torch.Generator,
    on_epoch: EpochCallback | None,
    keep_zeros: bool = False,
) -> list[dict[str, Any]]:
    optimizer = _adam([{"params": list(model.parameters()), "lr": settings.lr}])
    masks = _zero_masks(model) if keep_zeros else {}
    history = []
    model.train()
    for epoch in range(1, epochs + 1):
        stats = _EpochStats()
        for step, (xb, yb) in enumerate(
            iterate_batches(
                data.train_x, data.train_y, settings.batch_size, shuffle=True, generator=generator
            )
        ):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            _check_finite(loss, phase, epoch, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _reapply(masks)
            stats.add(loss.detach(), logits.detach(), yb)
        record = stats.record(phase, epoch)
        record["val_accuracy"] = evaluate(model, data.val_x, data.val_y)
        history.append(record)
        if on_epoch:
            on_epoch(record)
    return history


def _zero_masks(model: nn.Module) -> dict[torch.Tensor, torch.Tensor]:
    """Masks of weight tensors that hardening left sparse (weight granularity)."""
    masks = {}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nonzero = module.weight.detach() != 0
            if not bool(nonzero.all()):
                masks[module.weight] = nonzero
    return masks


@torch.no_grad()
def _reapply(masks: dict[torch.Tensor, torch.Tensor]) -> None:
    for weight, mask in masks.items():
        weight.mul_(mask)
