"""Learned threshold pruning, LTP (Azarian et al. 2020): one learned threshold per layer."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.gates import fused
from archsearch.gates.base import Gate
from archsearch.gates.registry import register_built_in
from archsearch.gates.shared import annealed, bounded_sigmoid


@register_built_in("learned_threshold")
class LearnedThresholdGate(Gate):
    """Soft mask m = sigmoid((s - tau) / T) on per-group weight scores s.

    The decision depends on the weights themselves, so the caller passes the scores (mean
    squared weight per group, with their autograd graph: the weights learn through the mask
    too). The mask is a differentiable surrogate of "kept", which is why it still penalises
    under BatchNorm, where L1/L2 on the weights lose their grip (the paper's central point).

    T is relative to the layer's score scale, so one ``temperature_fraction`` fits every
    layer: T = fraction * mean(s at calibration), the fraction annealing exponentially from
    ``temperature_fraction`` to ``final_fraction`` so soft and hard masks agree at the end.
    The scale, T and the schedule position are buffers, so a checkpoint resumes exactly.

    tau is learned relative to the score scale (``tau = relative_tau * score_scale``): mean
    squared weights are tiny and differ between layers, and Adam's step is absolute, so an
    absolute tau would jump past every score in one step. tau >= 0 is kept by clamping in
    ``after_optimizer_step`` rather than by a softplus, so tau starts at exactly 0.
    """

    #: lambda factors without a target (``Gate.unit_lambda_scale``), fitted on the trained
    #: LeNet-300-100 (benchmarks/RESULTS.md, "One lambda across gates, every gate scaled")
    unit_lambda_scale = 0.3
    weight_lambda_scale = 0.3

    needs_scores = True
    requires_warmup = True
    #: one threshold per layer must climb through the upper tail of the squared weights, many
    #: times their mean: at gate_lr 0.01 it stopped at 13% FLOPs when asked for 2%, at 0.1 at
    #: 4.3%; at 0.3 it reached 2.4%, at 3 it overshot to 0.5% (docs/gates.md)
    lr_scale = 30.0
    #: a layer of units has a few dozen scores, not hundreds of thousands: at 30 times
    #: gate_lr its threshold passed every channel of LeNet-5-Caffe's convolutions within the
    #: first gated epoch (asked for 2%: 1.26%, the floor); at 3 times, 2.10% (docs/gates.md)
    unit_lr_scale = 3.0

    def __init__(
        self, n: int, *, temperature_fraction: float = 0.1, final_fraction: float = 0.01
    ) -> None:
        super().__init__(n)
        if not 0.0 < final_fraction <= temperature_fraction:
            raise ConfigError(
                "learned_threshold needs 0 < final_fraction <= temperature_fraction, got "
                f"{final_fraction} and {temperature_fraction}"
            )
        self.temperature_fraction = float(temperature_fraction)
        self.final_fraction = float(final_fraction)
        #: tau in units of the layer's score scale, so one learning rate suits every layer
        self.relative_tau = nn.Parameter(torch.zeros(()))
        #: mean score at calibration; 0 means "not calibrated yet"
        self.register_buffer("score_scale", torch.zeros(()))
        self.register_buffer("temperature", torch.zeros(()))
        self.register_buffer("progress", torch.zeros(()))
        self._calibrated = False

    @property
    def tau(self) -> torch.Tensor:
        """The threshold on the scores (mean squared weights)."""
        return self.relative_tau * self.score_scale

    def sample(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """The soft mask, which is also the step's keep probability: held for the penalty's
        ``keep_probability(scores)`` of the same ``scores`` so a step computes it once.
        Only while the scores carry a graph: a backward between the two frees theirs as
        well as the mask's, so a mask computed afresh from them could not be used either."""
        mask = self._soft_mask(scores)
        if mask.requires_grad and scores is not None and scores.requires_grad:
            fused.remember_keep(self, mask, scores)
        return mask

    def fused_masked_weight(
        self, weight: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """At weight granularity a weight's score is its square (docs/gates.md): the fused
        formula squares the weight itself, so the gradient reaches the weight in the same
        pass rather than through a second graph of ``scores`` (``scores``, the same
        numbers, still identifies the step for ``keep_probability``)."""
        self._ready(scores)
        return fused.masked_weight(_FUSED, weight, self.tau, self.temperature)

    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        cached = self.fused_keep(scores)
        return cached if cached is not None else self._soft_mask(scores)

    def hard_mask(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        scores = self._ready(scores)
        return scores > self.tau.detach()

    def calibrate(self, scores: torch.Tensor | None = None) -> None:
        """Set the score scale from ``scores``; calling it again simply re-measures the scale."""
        scores = self._checked(scores)
        with torch.no_grad():
            floor = torch.finfo(self.score_scale.dtype).tiny
            self.score_scale.copy_(scores.detach().mean().clamp_min(floor))
            self._update_temperature()
        self._calibrated = True

    def set_progress(self, progress: float) -> None:
        progress = min(max(float(progress), 0.0), 1.0)
        self.progress.fill_(progress)
        self._update_temperature(progress)

    def after_optimizer_step(self) -> None:
        with torch.no_grad():
            self.relative_tau.clamp_(min=0.0)

    def _soft_mask(self, scores: torch.Tensor | None) -> torch.Tensor:
        """sigmoid((s - tau) / T), exactly 0 where it is under 1e-26 (``bounded_sigmoid``:
        at small temperatures most scores sit that far out, and the denormal floats the plain
        sigmoid makes there slowed every product with the mask)."""
        scores = self._ready(scores)
        return bounded_sigmoid((scores - self.tau) / self.temperature)

    def _update_temperature(self, progress: float | None = None) -> None:
        """T from the schedule position, in Python floats and one write: it runs every step,
        and on a CPU each tensor op costs microseconds however small (benchmarks/RESULTS.md,
        "Fewer small operations, and input gates as weight columns")."""
        progress = float(self.progress) if progress is None else progress
        fraction = annealed(self.temperature_fraction, self.final_fraction, progress)
        torch.mul(self.score_scale, fraction, out=self.temperature)

    def _ready(self, scores: torch.Tensor | None) -> torch.Tensor:
        """Checked scores; calibrates lazily from them when ``calibrate`` was never called."""
        scores = self._checked(scores)
        if not self._calibrated:
            # A loaded checkpoint carries its scale; only a truly fresh gate calibrates here.
            if bool(self.score_scale > 0):
                self._calibrated = True
            else:
                self.calibrate(scores)
        return scores

    def _checked(self, scores: torch.Tensor | None) -> torch.Tensor:
        if scores is None:
            raise ValueError("learned_threshold needs the per-group weight scores on every call")
        if scores.shape != (self.n,):
            raise ValueError(
                f"learned_threshold expected scores of shape ({self.n},), got {tuple(scores.shape)}"
            )
        return scores

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        # The loaded scale decides whether this gate is calibrated; look at it on next use.
        self._calibrated = False


@fused.formula
def _masked(
    weight: torch.Tensor, tau: torch.Tensor, temperature: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The weight times its soft mask m on the score weight^2, and m (the keep
    probability); keeps m."""
    m = bounded_sigmoid((weight * weight - tau) / temperature).flatten()
    return weight * m.view_as(weight), m, m


@fused.formula
def _masked_backward(
    grad: torch.Tensor,
    grad_keep: torch.Tensor,
    weight: torch.Tensor,
    tau: torch.Tensor,
    temperature: torch.Tensor,
    m: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, None]:
    """Gradients for the weight (through the mask's value and through its score) and tau
    (minus the scores')."""
    grad_m = (grad * weight).flatten() + grad_keep
    grad_scores = (grad_m * (m * (1.0 - m)) / temperature).view_as(grad)
    return grad * m.view_as(grad) + 2.0 * weight * grad_scores, -grad_scores.sum(), None


_FUSED = (_masked, _masked_backward)
