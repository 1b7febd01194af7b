"""Expected cost of a gated model as a fraction of the dense cost (docs/gates.md, "The penalty").

Dividing by the dense cost makes ``penalty_lambda`` mean the same on every model and data set.
The same formula evaluated on hard masks gives a cheap running estimate of the hardened model's
FLOPs ratio for the per-epoch curves (fvcore gives the exact figure after hardening).

The ratio is a polynomial in one number per group (the sum of its keep values for a weight
group, their mean for a unit group). Evaluated term by term on tensors it costs a training
step about twenty small operations forward and as many backward (a mean, a product and a
difference per layer), and on a CPU a small operation costs microseconds whatever its size:
for LeNet-300-100's units that was a quarter of what the gates add to a step. Where reading
a number costs no synchronisation (``host_reads``) the ratio is one autograd node instead
(``_HostRatio``): the per-group numbers are read once, the polynomial and its derivatives
are evaluated in Python, and the backward hands each group its derivative, spread over its
elements. On an accelerator the tensor formula stays (a read there stalls the step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from archsearch.errors import ConfigError
from archsearch.pruning import host_reads
from archsearch.pruning.groups import GroupSpec, LayerGeometry

COSTS: tuple[str, ...] = ("flops", "params")


@dataclass(frozen=True)
class _LayerTerms:
    geometry: LayerGeometry
    weight_group: str | None  # the group gating each weight (weight granularity)
    output_group: str | None  # the group gating its outputs (structured)
    input_groups: tuple[tuple[str, float], ...]  # (group, share of inputs) gating its inputs


class CostModel:
    """Turns per-group keep fractions into the expected cost ratio, differentiably."""

    def __init__(
        self, geometry: dict[str, LayerGeometry], groups: list[GroupSpec], cost: str = "flops"
    ) -> None:
        if cost not in COSTS:
            raise ConfigError(f"unknown penalty cost {cost!r}; choose one of: {', '.join(COSTS)}")
        self.cost = cost
        self._terms = [_terms_for(name, g, groups) for name, g in geometry.items()]
        self.dense = float(sum(self._dense(t.geometry) for t in self._terms))
        #: the groups the ratio depends on, in a fixed order, and whether each enters summed
        #: (weight groups) or averaged (unit groups)
        summed = {t.weight_group for t in self._terms if t.weight_group is not None}
        used = [t.weight_group for t in self._terms] + [t.output_group for t in self._terms]
        used += [name for t in self._terms for name, _ in t.input_groups]
        self._groups = tuple(dict.fromkeys(name for name in used if name is not None))
        self._summed = tuple(name in summed for name in self._groups)

    def _dense(self, g: LayerGeometry) -> int:
        return g.macs if self.cost == "flops" else g.weight_count + g.bias_count

    def ratio(self, keep: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expected cost / dense cost, for keep probabilities (or 0/1 masks) per group."""
        values = [keep[name] for name in self._groups]
        if values and all(host_reads.free(v) for v in values):
            return _HostRatio.apply(self, *values)
        return self.tensor_ratio(keep)

    def tensor_ratio(self, keep: dict[str, torch.Tensor]) -> torch.Tensor:
        """``ratio`` evaluated on tensors, term by term: the path of accelerators, where the
        step must not wait for a read."""
        total = None
        for term in self._terms:
            layer_cost = self._layer_cost(term, keep)
            total = layer_cost if total is None else total + layer_cost
        return total / self.dense

    def _layer_cost(self, term: _LayerTerms, keep: dict[str, torch.Tensor]) -> torch.Tensor:
        g = term.geometry
        if term.weight_group is not None:
            kept = keep[term.weight_group].sum()
            return kept * g.positions if self.cost == "flops" else kept + g.bias_count
        out_fraction = _mean(keep, term.output_group)
        in_fraction = 1.0
        for group, share in term.input_groups:
            in_fraction = in_fraction - share * (1.0 - _mean(keep, group))
        if self.cost == "flops":
            return g.macs * out_fraction * in_fraction
        return g.weight_count * out_fraction * in_fraction + g.bias_count * out_fraction

    def polynomial(self, numbers: dict[str, float]) -> tuple[float, dict[str, float]]:
        """The ratio and its derivative in each group's number (sum or mean), in Python
        floats, from those numbers: what ``_HostRatio`` evaluates."""
        total, slopes = 0.0, dict.fromkeys(numbers, 0.0)
        flops = self.cost == "flops"
        for term in self._terms:
            g = term.geometry
            if term.weight_group is not None:
                kept = numbers[term.weight_group]
                total += kept * g.positions if flops else kept + g.bias_count
                slopes[term.weight_group] += g.positions if flops else 1.0
                continue
            out = 1.0 if term.output_group is None else numbers[term.output_group]
            inp = 1.0 - sum(share * (1.0 - numbers[name]) for name, share in term.input_groups)
            # cost = a * out * inp + b * out
            a, b = (g.macs, 0.0) if flops else (g.weight_count, g.bias_count)
            total += a * out * inp + b * out
            if term.output_group is not None:
                slopes[term.output_group] += a * inp + b
            for name, share in term.input_groups:
                slopes[name] += a * out * share
        return total / self.dense, {name: s / self.dense for name, s in slopes.items()}


class _HostRatio(torch.autograd.Function):
    """``CostModel.ratio`` as one autograd node, for tensors a read does not stall
    (see the module doc)."""

    @staticmethod
    def forward(ctx: Any, model: CostModel, *values: torch.Tensor) -> torch.Tensor:
        floats = [v if v.is_floating_point() else v.float() for v in values]
        pairs = zip(floats, model._summed, strict=True)
        numbers = torch.stack([v.sum() if summed else v.mean() for v, summed in pairs]).tolist()
        ratio, slopes = model.polynomial(dict(zip(model._groups, numbers, strict=True)))
        ctx.slopes = [
            slopes[name] / (1 if summed else v.numel())
            for name, v, summed in zip(model._groups, values, model._summed, strict=True)
        ]
        ctx.shapes = [v.shape for v in values]
        return floats[0].new_tensor(ratio)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        per_group = grad * grad.new_tensor(ctx.slopes)
        return (None, *(per_group[i].expand(s) for i, s in enumerate(ctx.shapes)))


def _mean(keep: dict[str, torch.Tensor], group: str | None) -> torch.Tensor | float:
    return 1.0 if group is None else keep[group].float().mean()


def _terms_for(name: str, geometry: LayerGeometry, groups: list[GroupSpec]) -> _LayerTerms:
    weight_group = output_group = None
    inputs = []
    for group in groups:
        if group.kind == "weight" and name in group.producers:
            weight_group = group.name
        elif name in group.producers:
            output_group = group.name
        inputs += [(group.name, c.share) for c in group.consumers if c.layer == name]
    return _LayerTerms(geometry, weight_group, output_group, tuple(inputs))
