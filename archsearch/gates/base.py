"""The contract every gate method keeps (docs/gates.md, "The contract every gate keeps").

A gate owns the parameters that decide, for ``n`` groups of weights (single weights, neurons
or channels), whether each group stays. Pruning code only ever talks to this interface, so a
new method plugs in by subclassing ``Gate`` and registering it; the contract tests then cover
it automatically.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from archsearch.gates import fused


class Gate(nn.Module, abc.ABC):
    """Base class of the differentiable gate methods.

    Subclasses implement ``sample`` (the training multiplier), ``keep_probability`` and
    ``hard_mask``; ``test_scale`` defaults to 1 for exactly binary methods. ``forward`` is
    final in spirit: eval mode must return exactly ``hard_mask * test_scale`` so that the
    gated model in eval mode and the hardened subnetwork compute the same function.

    Methods whose decision depends on the gated weights themselves (learned thresholds) set
    ``needs_scores``; the caller then passes a per-group score tensor to every method.
    """

    #: True when the gate's decisions are functions of per-group weight scores.
    needs_scores: ClassVar[bool] = False
    #: True when training needs ARM's second, antithetic forward pass each step.
    two_pass: ClassVar[bool] = False
    #: True when the method only makes sense on trained weights (a dense warm-up first).
    requires_warmup: ClassVar[bool] = False
    #: Weight of the penalty on the expected cost of undecided groups (``train.
    #: undecided_penalty``), ramped in over gated training; 0 for gates that end binary
    #: on their own. A stochastic gate whose keep probabilities sink together sets it.
    polarisation: ClassVar[float] = 0.0
    #: Factor on ``gate_lr`` for this method's parameters, for methods whose parameters live
    #: on a wider scale than the others' (learned thresholds); ``unit_lr_scale``, where set,
    #: replaces it when the groups are units (neurons, channels, input features).
    lr_scale: ClassVar[float] = 1.0
    unit_lr_scale: ClassVar[float | None] = None

    #: Factors on lambda without a target, when the groups are units (neurons, channels,
    #: input features) and when they are single weights. A plain ``lambda * cost`` moves the
    #: methods by different amounts, so each method owns the factor that lands it, at one
    #: lambda, where the others land: a searched lambda range then means the same costs for
    #: every method (fitted from the trained LeNet-300-100, benchmarks/RESULTS.md, "One
    #: lambda across gates, every gate scaled"). With a target the penalty is relative and
    #: every method reaches its band at lambda 1: no factor applies.
    unit_lambda_scale: ClassVar[float] = 1.0
    weight_lambda_scale: ClassVar[float] = 1.0

    @classmethod
    def penalty_scale(cls, total_groups: int) -> float:
        """Factor on lambda for this method, given how many groups the model gates in all.

        The penalty is normalised by the dense cost, so each group's share of its gradient
        shrinks as 1/``total_groups``; methods whose data-loss gradient per group does not
        shrink with it (ARM's is one loss difference per group) scale lambda back up so the
        same lambda gives them the same outcome as the others."""
        return 1.0

    def __init__(self, n: int) -> None:
        super().__init__()
        if n < 1:
            raise ValueError(f"a gate needs at least one group, got n={n}")
        self.n = n

    # -- what each method defines ---------------------------------------------------------
    @abc.abstractmethod
    def sample(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Training-time multiplier z of shape (n,), values in [0, 1]."""

    @abc.abstractmethod
    def keep_probability(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Differentiable surrogate of P(group kept), shape (n,); the penalty is built on it."""

    @abc.abstractmethod
    def hard_mask(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic keep/drop decision, bool (n,): it defines the hardened subnetwork."""

    def test_scale(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Eval-time multiplier of kept groups; hardening folds it into the weights."""
        return torch.ones(self.n, device=self._device(), dtype=self._dtype())

    def strength(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Ranks groups when hardening must revive one of a layer whose gates all closed.

        Defaults to the keep probability; methods whose keep probability is exactly binary
        override it with the underlying continuous parameter.
        """
        return self.keep_probability(scores).detach()

    # -- hooks with do-nothing defaults ---------------------------------------------------
    def set_progress(self, progress: float) -> None:
        """Advance schedules (temperatures); ``progress`` runs from 0 to 1 over gated training."""

    def after_optimizer_step(self) -> None:
        """Project parameters back into their valid range (clamps) after each update."""

    def calibrate(self, scores: torch.Tensor | None = None) -> None:
        """Called once when gated training starts (after any dense warm-up).

        Methods whose scale depends on the trained weights (learned thresholds) set it here.
        """

    # -- ARM's antithetic pass (only for ``two_pass`` gates) ------------------------------
    def begin_antithetic(self) -> None:
        """Make the next training forward use the antithetic sample of the stored noise."""
        raise NotImplementedError(f"{type(self).__name__} has no antithetic pass")

    def end_antithetic(self) -> None:
        """Return to ordinary sampling."""
        raise NotImplementedError(f"{type(self).__name__} has no antithetic pass")

    def add_two_pass_gradient(self, loss: float, antithetic_loss: float) -> None:
        """Accumulate the estimator's gradient into the gate's parameters' ``.grad``."""
        raise NotImplementedError(f"{type(self).__name__} has no antithetic pass")

    # -- the one forward --------------------------------------------------------------------
    def forward(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        if self.training:
            return self.sample(scores)
        return self.hard_mask(scores).to(self._dtype()) * self.test_scale(scores)

    def masked_weight(
        self, weight: torch.Tensor, scores: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``weight * z`` for a weight-granularity gate (one group per weight, z viewed as the
        weight): what the gated layer computes with. In training it takes the method's fused
        formula (``fused_masked_weight``, ``archsearch.gates.fused``), which gives the same
        values and gradients as ``sample`` times the weight in far fewer passes, and the keep
        probability with them, held for the step's ``keep_probability(scores)``. Gates of
        fewer than ``fused.MIN_GROUPS`` weights stay eager: there the fixed cost of a
        compiled call outweighs the passes it saves."""
        if self.training and self.n >= fused.MIN_GROUPS and fused.enabled():
            both = self.fused_masked_weight(weight, scores)
            if both is not None:
                if both[1].requires_grad:
                    fused.remember_keep(self, both[1], scores)
                return both[0]
        return weight * self(scores).view_as(weight)

    def fused_masked_weight(
        self, weight: torch.Tensor, scores: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The training-mode ``weight * sample(scores)`` and ``keep_probability(scores)``
        through ``fused.masked_weight``; None (the default) where the method has none."""
        return None

    def fused_keep(self, scores: torch.Tensor | None = None) -> torch.Tensor | None:
        """The keep probability the last fused forward computed, if still current
        (``fused.recall_keep``); each method's ``keep_probability`` returns it first."""
        return fused.recall_keep(self, scores)

    def extra_repr(self) -> str:
        return f"n={self.n}"

    def _device(self) -> torch.device:
        for tensor in self.parameters():
            return tensor.device
        for tensor in self.buffers():
            return tensor.device
        return torch.device("cpu")

    def _dtype(self) -> torch.dtype:
        for tensor in self.parameters():
            return tensor.dtype
        return torch.get_default_dtype()
