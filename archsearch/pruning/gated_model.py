"""A model with gates attached: the original network untouched, plus one gate per group.

The base model's parameters are never rewritten. Structured masks multiply a module's output
through forward hooks; weight masks, and input-feature masks as columns of the first layer's
weight, are applied with ``torch.func.functional_call``. Every gate is sampled once per
forward, before the base model runs, so all modules that share a gate (coupled residual
channels) see the same sample within a minibatch.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from archsearch.gates import Gate, create_gate, get_gate_info
from archsearch.pruning import host_reads
from archsearch.pruning.groups import GroupSpec
from archsearch.pruning.unchanged_prefix import UnchangedPrefix
from archsearch.pruning.weight_folds import OutputFolds, as_columns, input_columns
from archsearch.pruning.weight_scores import mean_squares

#: the L0 paper starts the input layer's gates mostly open (drop rate 0.2)
INPUT_INIT_DROP_RATE = 0.2


def _gate_key(group_name: str) -> str:
    return group_name.replace(".", "__")


class GatedModel(nn.Module):
    """``base`` with a gate per group spec. ``gating = False`` runs the plain network (warm-up)."""

    def __init__(
        self,
        base: nn.Module,
        groups: list[GroupSpec],
        gate_name: str,
        gate_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.base = base
        self.groups = list(groups)
        self.gate_name = gate_name
        options = dict(gate_options or {})
        self.gates = nn.ModuleDict(
            {_gate_key(g.name): self._make_gate(g, options) for g in self.groups}
        )
        self.gating = True
        #: the weight scores of the last training forward, for the penalty of the same step
        self.last_scores: dict[str, torch.Tensor | None] | None = None
        self._active: dict[str, torch.Tensor] | None = None
        #: the survivor marks (``_survivor``) of the last training forward, by group
        self._survivors: dict[str, torch.Tensor | None] = {}
        self._modules_by_name = dict(base.named_modules())
        #: unit masks this forward applies through their layers' weights (``weight_folds``)
        self._folds = OutputFolds(base, self.groups)
        self._folded: frozenset[str] = frozenset()
        self._handles: list[Any] = []
        #: ARM's antithetic pass reuses what ran before any gate (``unchanged_prefix``)
        self._prefix = UnchangedPrefix(base) if self.two_pass else None
        self._antithetic_pass = False
        self._attach_hooks()

    def _make_gate(self, group: GroupSpec, options: dict[str, Any]) -> Gate:
        accepted = get_gate_info(self.gate_name).option_defaults()
        if group.kind == "input" and "init_drop_rate" in accepted:
            options = {"init_drop_rate": INPUT_INIT_DROP_RATE, **options}
        return create_gate(self.gate_name, group.size, **options)

    # -- access ------------------------------------------------------------------------------
    def gate(self, group_name: str) -> Gate:
        return self.gates[_gate_key(group_name)]

    @property
    def gate_list(self) -> list[Gate]:
        return list(self.gates.values())

    def gate_parameters(self) -> list[nn.Parameter]:
        return [p for g in self.gate_list for p in g.parameters()]

    def weight_of(self, layer: str) -> torch.Tensor:
        return self._modules_by_name[layer].weight

    # -- per-group scores (for gates that decide from the weights) -------------------------
    def scores(self, group: GroupSpec) -> torch.Tensor | None:
        """Mean squared weight of each group: what learned thresholds compare against."""
        if not self.gate(group.name).needs_scores:
            return None
        if group.kind == "weight":
            return self.weight_of(group.producers[0]).pow(2).flatten()
        if group.kind == "input":
            return mean_squares([self.weight_of(group.consumers[0].layer)], dim=0)
        per_channel = mean_squares([self.weight_of(p).flatten(1) for p in group.producers], dim=1)
        if group.repeat == 1:
            return per_channel
        return per_channel.view(group.repeat, group.size).mean(0)

    def keep_probabilities(
        self, scores: dict[str, torch.Tensor | None] | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-group keep probabilities; pass ``last_scores`` of the forward just run to reuse
        its weight scores (and their autograd graph) instead of squaring every weight again.
        A structured group's survivor (``_with_survivor``) counts as kept: 1 in value, its
        keep probability's gradient. It is the one the forward just kept when
        ``last_scores`` is passed, else the one these probabilities would keep."""
        forward = scores is not None and scores is self.last_scores
        scores = scores if scores is not None else {g.name: self.scores(g) for g in self.groups}
        keep = {g.name: self.gate(g.name).keep_probability(scores[g.name]) for g in self.groups}
        for group in self.groups:
            if group.kind == "weight":
                continue
            p = keep[group.name]
            if forward and group.name in self._survivors:
                mark = self._survivors[group.name]
            else:
                mark = self._survivor(group.name, p, scores[group.name])
            if mark is not None:
                keep[group.name] = p + mark * (1.0 - p).detach()
        return keep

    @torch.no_grad()
    def hard_masks(
        self, scores: dict[str, torch.Tensor | None] | None = None
    ) -> dict[str, torch.Tensor]:
        """The keep/drop decisions hardening would take now; ``last_scores`` may be passed as
        in ``keep_probabilities``."""
        scores = scores if scores is not None else {g.name: self.scores(g) for g in self.groups}
        return {g.name: self.gate(g.name).hard_mask(scores[g.name]) for g in self.groups}

    @torch.no_grad()
    def kept_masks(
        self, scores: dict[str, torch.Tensor | None] | None = None
    ) -> dict[str, torch.Tensor]:
        """What hardening keeps: the hard masks, except that a group whose gates all closed
        keeps its strongest element (a layer cannot vanish). The penalty's value is the cost
        of these, so a dead layer's revived unit is not free to the penalty and then paid for
        in the shipped network."""
        scores = scores if scores is not None else {g.name: self.scores(g) for g in self.groups}
        masks = self.hard_masks(scores)
        for name, mask in masks.items():
            # no ``if not mask.any()``: a training step must not wait for the device to answer
            masks[name] = mask | self._strongest_if_none_open(name, mask, scores[name])
        return masks

    @torch.no_grad()
    def strength(self, group: GroupSpec) -> torch.Tensor:
        return self.gate(group.name).strength(self.scores(group))

    @torch.no_grad()
    def test_scales(self) -> dict[str, torch.Tensor]:
        return {g.name: self.gate(g.name).test_scale(self.scores(g)) for g in self.groups}

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.gating:
            return self.base(x)
        scores = {g.name: self.scores(g) for g in self.groups}
        self.last_scores = scores if self.training else None
        # weight groups mask their layer's weight in one fused step; the others scale outputs
        self._survivors = {}
        self._active = {
            g.name: self._with_survivor(g.name, scores[g.name])
            for g in self.groups
            if g.kind != "weight"
        }
        # ARM's antithetic pass reuses the first gated layer's raw output; folded, it has none
        fold = self._prefix is None and x.dim() > 0
        self._folded = self._folds.choose(x.shape[0]) if fold else frozenset()
        try:
            masked = {
                f"{g.name}.weight": self.gate(g.name).masked_weight(
                    self.weight_of(g.name), scores[g.name]
                )
                for g in self.groups
                if g.kind == "weight"
            }
            masked.update(input_columns(self.groups, self._active, self.weight_of))
            self._folds.fold(masked, self._folded, self._active)
            with self._recording_prefix(x):
                return functional_call(self.base, masked, (x,)) if masked else self.base(x)
        finally:
            self._active = None
            self._folded = frozenset()

    def _recording_prefix(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        """A two-pass step's first forward records its ungated prefix for the second."""
        if self._prefix is None or not self.training or self._antithetic_pass:
            return contextlib.nullcontext()
        return self._prefix.recording(x)

    def _with_survivor(self, name: str, scores: torch.Tensor | None) -> torch.Tensor:
        """The group's multiplier, with its strongest element kept when every element is
        closed, as hardening keeps it (``kept_masks``): a structured group whose gates all
        closed would otherwise train a network with a dead layer while the one shipped has
        a live unit there, one the penalty never saw (trainable_gate, LeNet-5-Caffe channels
        from the trained network, 2%: 2.9% shipped for 2.0% seen). In training the survivor
        is 1 plus its gate's own value, so its gradient still flows; in eval it carries its
        test scale, as the hardened network's does."""
        gate = self.gate(name)
        z = gate(scores)
        mark = self._survivor(name, z, scores)
        if self.training:
            self._survivors[name] = mark
        if mark is None:
            return z
        if self.training:
            return z + mark
        scale = gate.test_scale(scores)
        return z + mark * torch.where(scale > 0, scale, torch.ones_like(scale))

    def _survivor(
        self, name: str, values: torch.Tensor, scores: torch.Tensor | None
    ) -> torch.Tensor | None:
        """1.0 at the group's strongest element when none of ``values`` is above zero, else
        zeros. On a CPU a live group (nearly always) answers None after one reduction; on an
        accelerator the mark is computed on the device, so a step never waits for the host."""
        if host_reads.free(values) and float(values.detach().max()) > 0:
            return None
        return self._strongest_if_none_open(name, values.detach() > 0, scores).to(values.dtype)

    def _strongest_if_none_open(
        self, name: str, open_: torch.Tensor, scores: torch.Tensor | None
    ) -> torch.Tensor:
        """Bool, shaped as ``open_``: True at the group's strongest element (``Gate.strength``)
        when no element is open, else all False; computed on the device, without a read."""
        strength = self.gate(name).strength(scores).reshape(-1)
        strongest = torch.arange(strength.numel(), device=open_.device) == torch.argmax(strength)
        return strongest.view_as(open_) & ~open_.any()

    def _attach_hooks(self) -> None:
        for group in self.groups:
            if group.kind == "input":
                layer = self._modules_by_name[group.consumers[0].layer]
                self._handles.append(layer.register_forward_pre_hook(self._input_hook(group.name)))
            channels = group.site_channels or ((),) * len(group.mask_sites)
            for site, index in zip(group.mask_sites, channels, strict=True):
                module = self._modules_by_name[site]
                hook = self._output_hook(group, isinstance(module, nn.Linear), index)
                self._handles.append(module.register_forward_hook(hook))
        if self._prefix is not None:
            self._handles.extend(self._prefix.attach())

    def _output_hook(self, group: GroupSpec, last_axis: bool, index: tuple[int, ...]):
        """Multiply the module's output on its channel axis: the last one for a Linear layer
        (features, or channels of a channels-last image), else dim 1 (N, C, ...); ``index``
        places the mask on the channels the group spans (a norm after a concatenation)."""
        name, repeat = group.name, group.repeat

        def multiply(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
            if self._active is None:
                return output
            if name in self._folded:
                return output  # scaled through the layer's weight and bias
            z = self._active[name]
            z = z.repeat(repeat) if repeat > 1 else z  # channel j of every convolution group
            if index:
                z = spread(z, index, output.shape[-1 if last_axis else 1])
            if last_axis:
                return output * z
            return output * z.view(1, -1, *([1] * (output.dim() - 2)))

        return multiply

    def _input_hook(self, group_name: str):
        def multiply(_module: nn.Module, inputs: tuple) -> tuple:
            if self._active is None or as_columns(self._active[group_name]):
                return inputs
            return (inputs[0] * self._active[group_name], *inputs[1:])

        return multiply

    # -- schedules and estimators ----------------------------------------------------------
    def set_progress(self, progress: float) -> None:
        for gate in self.gate_list:
            gate.set_progress(progress)

    def after_optimizer_step(self) -> None:
        for gate in self.gate_list:
            gate.after_optimizer_step()

    def calibrate(self) -> None:
        for group in self.groups:
            self.gate(group.name).calibrate(self.scores(group))

    @property
    def two_pass(self) -> bool:
        return any(g.two_pass for g in self.gate_list)

    def penalty_scale(self, targeted: bool) -> float:
        """The gate method's factor on lambda for this model's groups: for their number, and
        without a target (``targeted`` False) its own factor for units or single weights."""
        method = self._method
        if method is None:
            return 1.0
        scale = method.penalty_scale(sum(g.n for g in self.gate_list))
        if not targeted:
            scale *= method.unit_lambda_scale if self._units_only else method.weight_lambda_scale
        return scale

    @property
    def gate_lr_scale(self) -> float:
        """The gate method's factor on ``gate_lr``: ``Gate.unit_lr_scale`` when every group
        is a unit and the method sets one, else ``Gate.lr_scale``."""
        method = self._method
        if method is None:
            return 1.0
        unit_scale = method.unit_lr_scale if self._units_only else None
        return unit_scale or method.lr_scale

    @property
    def _method(self) -> type[Gate] | None:
        """The gate method every group uses (one per model), None when nothing is gated."""
        gates = self.gate_list
        return type(gates[0]) if gates else None

    @property
    def _units_only(self) -> bool:
        """Whether every gated group is a unit (a neuron, channel or input feature)."""
        return all(group.kind != "weight" for group in self.groups)

    @property
    def polarisation(self) -> float:
        """The gates' weight on the penalty of undecided groups (``Gate.polarisation``)."""
        return max((g.polarisation for g in self.gate_list), default=0.0)

    @contextlib.contextmanager
    def antithetic(self) -> Iterator[None]:
        """ARM's second pass: same noise, antithetic samples, BatchNorm statistics untouched."""
        for gate in self.gate_list:
            gate.begin_antithetic()
        self._antithetic_pass = True
        reuse = self._prefix.replaying() if self._prefix else contextlib.nullcontext()
        try:
            with frozen_batchnorm_statistics(self.base), reuse:
                yield
        finally:
            self._antithetic_pass = False
            for gate in self.gate_list:
                gate.end_antithetic()

    def add_two_pass_gradient(self, loss: float, antithetic_loss: float) -> None:
        for gate in self.gate_list:
            gate.add_two_pass_gradient(loss, antithetic_loss)

    # -- copies without gates --------------------------------------------------------------
    def plain_copy(self) -> nn.Module:
        """A deep copy of the base network with none of the gating hooks attached."""
        for handle in self._handles:
            handle.remove()
        try:
            return copy.deepcopy(self.base)
        finally:
            self._handles = []
            self._attach_hooks()


def spread(values: torch.Tensor, index: tuple[int, ...], width: int) -> torch.Tensor:
    """``values`` at positions ``index`` of a vector of ones ``width`` long."""
    full = values.new_ones(width)
    return full.index_copy(0, torch.tensor(index, device=values.device), values)


@contextlib.contextmanager
def frozen_batchnorm_statistics(model: nn.Module) -> Iterator[None]:
    """Run a training-mode forward without letting it move BatchNorm running statistics."""
    saved = [
        (m, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for module, mean, var, count in saved:
                module.running_mean.copy_(mean)
                module.running_var.copy_(var)
                module.num_batches_tracked.copy_(count)
