"""Training loops: dense warm-up, gated training with the cost penalty, fine-tuning, evaluation.

Every phase reads its settings (epochs, batch size, learning rates, penalty) from the trial's
``TrialConfig``, carried with the data, the shuffling generator and the epoch callback in one
``TrainingRun``, and runs the same epoch loop (``_epochs``); only the step differs. Batches come
from ``DataSplits.batches``: slices of in-memory tensors when the data fits (on a 2-core
machine a DataLoader's per-example collation costs more than the small models we train), a
DataLoader for data that streams.

A model that returns more than logits (auxiliary heads, named tuples, dicts) is read by one
rule in every phase, ``models.primary_output``: its logits feed the loss and the accuracy;
auxiliary outputs add ``aux_loss_weight × cross-entropy`` each only when the model sets that
weight (``_classification_loss``).

Nothing in the step loop waits for the device: an epoch's loss and accuracy add up as tensors
where the model runs, and whether the loss stayed finite is read every
``FINITE_CHECK_STEPS`` steps and at the epoch's end (on a GPU a read is a synchronisation,
which would stall the queue of kernels at every step). ``precision: bf16`` runs the steps'
forward passes under autocast.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from archsearch.config import TrialConfig
from archsearch.data import DataSplits, iterate_batches
from archsearch.data.splits import Batches
from archsearch.distillation import distillation_loss
from archsearch.errors import DegenerateTrialError
from archsearch.models import aux_loss_weight, aux_outputs, primary_output
from archsearch.penalty import penalty, undecided_penalty
from archsearch.pruning.cost import CostModel
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.kept_zeros import keep_zeros_zero, zero_masks
from archsearch.schedules import lr_factor

#: called with each epoch's record (phase, epoch, losses, accuracies, cost ratios)
EpochCallback = Callable[[dict[str, Any]], None]
#: one optimisation step on a batch: (batch x, batch y, epoch, step in epoch) -> (logits, the
#: loss reported, the loss optimised), detached, on the model's device
_Step = Callable[
    [torch.Tensor, torch.Tensor, int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]
#: steps between two reads of whether the loss stayed finite (and at every epoch's end)
FINITE_CHECK_STEPS = 25


@dataclass(frozen=True)
class TrainingRun:
    """What every phase of one trial shares: the trial's settings, its data splits, the
    generator that shuffles every phase's batches (one stream, so a trial is reproducible from
    its seed) and the callback told of each finished epoch."""

    config: TrialConfig
    data: DataSplits
    generator: torch.Generator
    on_epoch: EpochCallback | None = None


def flush_denormals() -> None:
    """Make this process's CPU treat denormal floats as zero (a process-wide setting; no-op
    where the CPU cannot). Adam's first moment of a weight whose gradient stays 0 (the
    weights into a closed unit, a pruned weight) decays by 0.9 a step into the denormal range,
    and on an x86 CPU every operation touching denormals is many times slower: without this a
    LeNet-300-100 `arm` neuron trial's gated epochs slowed from 1.48 s to 2.04 s by the sixth,
    `learned_threshold` weight from 1.88 s to 3.41 s, with the same accuracy to four digits
    (benchmarks/RESULTS.md, "Denormal floats in long trials"). Values that small are below
    float32's normal range, so no trial's figure moves; a trial stays repeatable bit for bit."""
    torch.set_flush_denormal(True)


def _adam(groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """AdamW (Adam when no group decays) with the fused kernel: one pass per tensor instead
    of ~8. A weight-granularity gate adds one parameter per weight, so the optimizer step is
    a real share of its cost."""
    return torch.optim.AdamW([{"weight_decay": 0.0, **group} for group in groups], fused=True)


def _weights(params: list[nn.Parameter], config: TrialConfig, lr: float) -> dict[str, Any]:
    """The parameter group of the network's weights: their rate, their decay, and the
    schedule ``_scheduled`` runs them on (the gates' group has none)."""
    return {"params": params, "lr": lr, "weight_decay": config.weight_decay, "scheduled": True}


def _scheduled(
    optimizer: torch.optim.Optimizer, run: TrainingRun, epochs: int, schedule: str | None = None
) -> Callable[[int], None]:
    """Sets the weights' rate for each step of a phase of ``epochs`` (``archsearch.schedules``;
    ``schedule``, else ``lr_schedule``); returns the per-step setter."""
    config = run.config
    schedule = schedule or config.lr_schedule
    per_epoch = math.ceil(run.data.size("train") / config.batch_size)
    total, warmup = epochs * per_epoch, config.lr_warmup_epochs * per_epoch
    groups = [g for g in optimizer.param_groups if g.get("scheduled")]
    for group in groups:
        group["base_lr"] = group["lr"]

    def set_rate(step: int) -> None:
        factor = lr_factor(schedule, step, total, warmup)
        for group in groups:
            group["lr"] = group["base_lr"] * factor

    return set_rate


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Accuracy on in-memory tensors, in eval mode; restores the model's mode."""
    return _accuracy(model, iterate_batches(x, y, batch_size, shuffle=False), len(y))


def accuracy(model: nn.Module, data: DataSplits, split: str, batch_size: int = 1024) -> float:
    """Accuracy on one split (``"val"``, ``"test"``), in memory or streamed."""
    return _accuracy(model, data.batches(split, batch_size), data.size(split))


@torch.no_grad()
def _accuracy(model: nn.Module, batches: Batches, total: int) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    for xb, yb in batches:
        correct += int((primary_output(model(xb)).argmax(1) == yb).sum())
    model.train(was_training)
    return correct / max(1, total)


def _classification_loss(
    output: Any, y: torch.Tensor, aux_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, loss): cross-entropy on the primary output, plus ``aux_weight`` times that of
    each auxiliary output when the weight is positive."""
    logits = primary_output(output)
    loss = F.cross_entropy(logits, y)
    if aux_weight > 0:
        for aux in aux_outputs(output):
            loss = loss + aux_weight * F.cross_entropy(aux, y)
    return logits, loss


def _autocast(config: TrialConfig, x: torch.Tensor) -> contextlib.AbstractContextManager:
    """The forward pass's arithmetic: bf16 autocast when the trial asks for it."""
    if config.precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(x.device.type, dtype=torch.bfloat16)


class _EpochStats:
    """An epoch's sums, kept as tensors on the model's device and read once at its end."""

    def __init__(self) -> None:
        self.loss: torch.Tensor | float = 0.0
        self.correct: torch.Tensor | int = 0
        self.seen = 0
        self.nonfinite: torch.Tensor | bool = False
        self.last: torch.Tensor | None = None
        self.started = time.perf_counter()

    def add(
        self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, optimised: torch.Tensor
    ) -> None:
        self.loss = self.loss + loss.float() * len(y)
        self.correct = self.correct + (logits.argmax(1) == y).sum()
        self.seen += len(y)
        self.nonfinite = self.nonfinite | ~torch.isfinite(optimised)
        self.last = optimised

    def check_finite(self, phase: str, epoch: int, step: int) -> None:
        """One read of the device: a loss that stopped being a number fails the trial."""
        if self.last is not None and bool(self.nonfinite):
            raise DegenerateTrialError(
                f"loss became {float(self.last)} in {phase} epoch {epoch} by step {step}; "
                "lower the learning rate or lambda"
            )

    def record(self, phase: str, epoch: int) -> dict[str, Any]:
        return {
            "phase": phase,
            "epoch": epoch,
            "train_loss": float(self.loss) / max(1, self.seen),
            "train_accuracy": int(self.correct) / max(1, self.seen),
            "seconds": time.perf_counter() - self.started,
        }


def _epochs(
    run: TrainingRun,
    phase: str,
    epochs: int,
    step: _Step,
    summary: Callable[[], dict[str, float]],
) -> list[dict[str, Any]]:
    """The loop every phase shares: shuffled batches, one ``step`` each, then the epoch's
    record (its ``seconds`` cover the training steps only, not the ``summary``)."""
    flush_denormals()
    data, history = run.data, []
    for epoch in range(1, epochs + 1):
        stats = _EpochStats()
        batches = data.batches(
            "train", run.config.batch_size, shuffle=True, generator=run.generator
        )
        index = -1
        for index, (xb, yb) in enumerate(batches):
            logits, loss, optimised = step(xb, yb, epoch, index)
            stats.add(loss, logits, yb, optimised)
            if (index + 1) % FINITE_CHECK_STEPS == 0:
                stats.check_finite(phase, epoch, index)
        stats.check_finite(phase, epoch, index)
        record = stats.record(phase, epoch)
        record.update(summary())
        history.append(record)
        if run.on_epoch:
            run.on_epoch(record)
    return history


def pretrain(gated: GatedModel, run: TrainingRun) -> list[dict[str, Any]]:
    """Dense warm-up of the base network (gates off): learned thresholds need trained weights."""
    epochs = run.config.resolved_pretrain_epochs
    if epochs == 0:
        return []
    gated.gating = False
    try:
        return _plain_epochs(gated.base, run, "pretrain", epochs, run.config.lr)
    finally:
        gated.gating = True


def train_gated(gated: GatedModel, cost: CostModel, run: TrainingRun) -> list[dict[str, Any]]:
    """Cross-entropy plus the normalised cost penalty; ARM gates get their antithetic pass."""
    config = run.config
    gated.calibrate()
    optimizer = _adam(
        [
            _weights(list(gated.base.parameters()), config, config.lr),
            {"params": gated.gate_parameters(), "lr": config.gate_lr * gated.gate_lr_scale},
        ]
    )
    set_rate = _scheduled(optimizer, run, config.epochs)
    steps_per_epoch = math.ceil(run.data.size("train") / config.batch_size)
    total_steps = max(1, config.epochs * steps_per_epoch - 1)

    def step(
        xb: torch.Tensor, yb: torch.Tensor, epoch: int, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        done = (epoch - 1) * steps_per_epoch + index  # schedules run over all gated epochs
        progress = min(1.0, done / total_steps)
        gated.set_progress(progress)
        set_rate(done)
        return _gated_step(gated, cost, config, optimizer, (xb, yb), progress)

    gated.train()
    return _epochs(
        run,
        "gated",
        config.epochs,
        step,
        lambda: {**_gate_summary(gated, cost, run.data), "lr": optimizer.param_groups[0]["lr"]},
    )


def _gated_step(
    gated: GatedModel,
    cost: CostModel,
    config: TrialConfig,
    optimizer: torch.optim.Optimizer,
    batch: tuple[torch.Tensor, torch.Tensor],
    progress: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xb, yb = batch
    aux_weight = aux_loss_weight(gated.base)
    with _autocast(config, xb):
        logits, data_loss = _classification_loss(gated(xb), yb, aux_weight)
    keep = gated.keep_probabilities(gated.last_scores)
    expected = cost.ratio(keep)
    # without a target the penalty's gradient does not depend on the hard masks and its value
    # is never read, so the per-step hard masks are only measured when a target needs them
    hard = expected
    if config.penalty_target is not None:
        hard = cost.ratio(_float_masks(gated.kept_masks(gated.last_scores)))
    scale = gated.penalty_scale(config.penalty_target is not None)
    loss = data_loss + scale * penalty(expected, hard, config)
    if gated.polarisation > 0:
        push = gated.polarisation * progress
        loss = loss + scale * undecided_penalty(keep, cost, config, push, hard)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if gated.two_pass:
        with torch.no_grad(), gated.antithetic(), _autocast(config, xb):
            _, antithetic_loss = _classification_loss(gated(xb), yb, aux_weight)
        gated.add_two_pass_gradient(data_loss.item(), antithetic_loss.item())
    optimizer.step()
    gated.after_optimizer_step()
    return logits.detach(), data_loss.detach(), loss.detach()


def _float_masks(masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: mask.float() for name, mask in masks.items()}


@torch.no_grad()
def _gate_summary(gated: GatedModel, cost: CostModel, data: DataSplits) -> dict[str, float]:
    """The epoch's validation accuracy (eval mode: the hardened network's function) and the
    cost the penalty's gradient pulls on against the cost hardening would keep."""
    expected = float(cost.ratio(gated.keep_probabilities()))
    hard = float(cost.ratio(_float_masks(gated.kept_masks())))
    return {
        "val_accuracy": accuracy(gated, data, "val"),
        "expected_cost_ratio": expected,
        "hard_cost_ratio": hard,
        "cost_gap": hard - expected,
    }


def finetune(
    model: nn.Module, run: TrainingRun, teacher: nn.Module | None = None
) -> list[dict[str, Any]]:
    """Train the hardened subnetwork; weights that hardening zeroed stay zero. With a
    ``teacher`` (the dense network the trial started from) and ``distill_weight`` > 0, that
    share of the loss matches the teacher's softened outputs (``distillation_loss``)."""
    config = run.config
    lr = config.finetune_lr if config.finetune_lr is not None else config.lr
    if config.distill_weight == 0:
        teacher = None
    return _plain_epochs(
        model, run, "finetune", config.finetune_epochs, lr, keep_zeros=True, teacher=teacher
    )


def train_dense(model: nn.Module, run: TrainingRun) -> list[dict[str, Any]]:
    """The dense reference of a search: a trial's schedule without its gates, ``epochs`` at
    ``lr`` then ``finetune_epochs`` at the fine-tuning rate, each phase on its own schedule,
    so the pruned networks are compared with a network trained as long and in the same way."""
    config = run.config
    history = _plain_epochs(model, run, "dense", config.epochs, config.lr)
    lr = config.finetune_lr if config.finetune_lr is not None else config.lr
    return history + _plain_epochs(model, run, "finetune", config.finetune_epochs, lr)


def _plain_epochs(
    model: nn.Module,
    run: TrainingRun,
    phase: str,
    epochs: int,
    lr: float,
    keep_zeros: bool = False,
    teacher: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """Plain cross-entropy training (warm-up and fine-tuning), optionally keeping zeros zero
    and distilling ``teacher`` (eval mode, no gradient) with ``distill_weight``."""
    config = run.config
    optimizer = _adam([_weights(list(model.parameters()), config, lr)])
    schedule = config.finetune_lr_schedule if phase == "finetune" else None
    set_rate = _scheduled(optimizer, run, epochs, schedule)
    per_epoch = math.ceil(run.data.size("train") / config.batch_size)
    masks = zero_masks(model) if keep_zeros else {}
    aux_weight = aux_loss_weight(model)
    if teacher is not None:
        teacher.eval()

    def step(
        xb: torch.Tensor, yb: torch.Tensor, epoch: int, index: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        set_rate((epoch - 1) * per_epoch + index)
        with _autocast(config, xb):
            logits, loss = _classification_loss(model(xb), yb, aux_weight)
            optimised = loss
            if teacher is not None:
                with torch.no_grad():
                    target = primary_output(teacher(xb))
                soft = distillation_loss(logits, target, config.distill_temperature)
                share = config.distill_weight
                optimised = (1 - share) * loss + share * soft
        optimizer.zero_grad(set_to_none=True)
        optimised.backward()
        optimizer.step()
        keep_zeros_zero(masks)
        return logits.detach(), loss.detach(), optimised.detach()

    model.train()
    return _epochs(
        run,
        phase,
        epochs,
        step,
        lambda: {
            "val_accuracy": accuracy(model, run.data, "val"),
            "lr": optimizer.param_groups[0]["lr"],
        },
    )
