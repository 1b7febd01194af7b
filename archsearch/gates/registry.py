"""The gate registry: one place that knows every gate method by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from archsearch.errors import ConfigError, UnknownNameError
from archsearch.gates.base import Gate


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
        params = inspect.signature(self.cls.__init__).parameters
        return {
            name: p.default
            for name, p in params.items()
            if name not in ("self", "n") and p.kind is inspect.Parameter.KEYWORD_ONLY
        }


_GATES: dict[str, GateInfo] = {}


def register_gate(
    name: str, *, description: str, stochastic: bool, estimator: str, fractional_scale: bool = False
) -> Callable[[type[Gate]], type[Gate]]:
    """Class decorator that adds a gate method to the registry under ``name``."""

    def add(cls: type[Gate]) -> type[Gate]:
        if name in _GATES:
            raise ValueError(f"gate {name!r} is registered twice")
        _GATES[name] = GateInfo(name, cls, description, stochastic, estimator, fractional_scale)
        return cls

    return add


def list_gates() -> list[str]:
    """Registered gate names, in registration order."""
    return list(_GATES)


def get_gate_info(name: str) -> GateInfo:
    try:
        return _GATES[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown gate {name!r}; choose one of: {', '.join(_GATES)} (see `archsearch gates`)"
        ) from None


def create_gate(name: str, n: int, **options: Any) -> Gate:
    """Build gate ``name`` for ``n`` groups; unknown options are a ConfigError naming the key."""
    info = get_gate_info(name)
    allowed = info.option_defaults()
    for key in options:
        if key not in allowed:
            raise ConfigError(
                f"gate {name!r} has no option {key!r}; its options are: "
                f"{', '.join(sorted(allowed)) or '(none)'}"
            )
    return info.cls(n, **options)
