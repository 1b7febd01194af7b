"""The gate registry: one place that knows every gate method by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archsearch.gate_cards import built_in_card
from archsearch.gates.base import Gate
from archsearch.registry import Registry, option_defaults


@dataclass(frozen=True)
class GateInfo:
    """What users and the search need to know about a gate method without building one."""

    name: str
    cls: type[Gate]
    description: str
    stochastic: bool
    #: how gradients reach the gate: reparameterisation, arm, straight-through or deterministic
    estimator: str
    #: True when eval-time test_scale can be fractional (folded into weights on hardening)
    fractional_scale: bool

    def option_defaults(self) -> dict[str, Any]:
        """Keyword options the gate accepts (besides ``n``), with their defaults."""
        return option_defaults(self.cls)


GATES: Registry[GateInfo] = Registry("gate", see="archsearch gates")


def register_gate(
    name: str, *, description: str, stochastic: bool, estimator: str, fractional_scale: bool = False
) -> Callable[[type[Gate]], type[Gate]]:
    """Class decorator that adds a gate method to the registry under ``name``."""
    return GATES.decorator(
        name, lambda cls: GateInfo(name, cls, description, stochastic, estimator, fractional_scale)
    )


def register_built_in(name: str) -> Callable[[type[Gate]], type[Gate]]:
    """``register_gate`` with the text of built-in method ``name``'s card
    (``archsearch.gate_cards``), where the listing reads it without importing torch."""
    card = built_in_card(name)
    return register_gate(
        card.name,
        description=card.description,
        stochastic=card.stochastic,
        estimator=card.estimator,
        fractional_scale=card.fractional_scale,
    )


def list_gates() -> list[str]:
    """Registered gate names, in registration order."""
    return GATES.names()


def get_gate_info(name: str) -> GateInfo:
    return GATES.get(name)


def create_gate(name: str, n: int, **options: Any) -> Gate:
    """Build gate ``name`` for ``n`` groups; unknown options are a ConfigError naming the key."""
    return GATES.with_options(name, options).cls(n, **options)
