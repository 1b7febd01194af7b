"""Expected cost of a gated model as a fraction of the dense cost (docs/gates.md, "The penalty").

Dividing by the dense cost makes ``penalty_lambda`` mean the same on every model and data set.
The same formula evaluated on hard masks gives a cheap running estimate of the hardened model's
FLOPs ratio for the per-epoch curves (fvcore gives the exact figure after hardening).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from archsearch.errors import ConfigError
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

    def _dense(self, g: LayerGeometry) -> int:
        return g.macs if self.cost == "flops" else g.weight_count + g.bias_count

    def ratio(self, keep: dict[str, torch.Tensor]) -> torch.Tensor:
        """Expected cost / dense cost, for keep probabilities (or 0/1 masks) per group."""
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
