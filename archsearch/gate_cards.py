"""What a user reads about each built-in gate method, importable without torch.

``archsearch gates`` is a read command: it prints names, descriptions, estimators and
options, text that never changes at run time, yet the gate classes are torch modules and
importing them imports torch (1.4-2.4 s on the 2-vCPU machine, most of the command's time).
So the text lives here, one card per method in the order the registry lists them; each
built-in class registers with its card (``register_built_in``), so nothing is written twice,
and ``tests/test_gate_cards.py`` holds every card's options to its class's constructor.
It is not a module of ``archsearch.gates``: importing any module of a package runs the
package's ``__init__``, and that one imports the six classes (and torch) to register them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class GateCard:
    """A gate method as ``archsearch gates`` and the registry describe it."""

    name: str
    description: str
    stochastic: bool
    #: how gradients reach the gate: reparameterisation, arm, straight-through or deterministic
    estimator: str
    #: True when eval-time test_scale can be fractional (folded into weights on hardening)
    fractional_scale: bool = False
    #: the options a space file or ``--gate-option`` may set, with their defaults
    options: Mapping[str, Any] = field(default_factory=dict)


#: the six built-in methods, in registration (and listing) order; formulas in docs/gates.md
BUILT_IN: tuple[GateCard, ...] = (
    GateCard(
        "hard_concrete",
        "L0 hard concrete gates (Louizos et al. 2018), reparameterised; the baseline",
        stochastic=True,
        estimator="reparameterisation",
        fractional_scale=True,
        options={"init_drop_rate": 0.5},
    ),
    GateCard(
        "arm",
        "L0-ARM (Li & Ji 2019): binary gates, unbiased gradient from an antithetic pass",
        stochastic=True,
        estimator="arm",
        options={"init_drop_rate": 0.5, "k": 7.0, "hard_sigmoid": False},
    ),
    GateCard(
        "gumbel_softmax",
        "straight-through Gumbel-Softmax keep/drop gates (Zhang et al. 2023)",
        stochastic=True,
        estimator="straight-through",
        options={"init_drop_rate": 0.5, "tau0": 1.0, "tau_min": 0.1},
    ),
    GateCard(
        "trainable_gate",
        "trainable gate function (Kim et al. 2019): deterministic step, shaped gradient",
        stochastic=False,
        estimator="straight-through",
        options={"gradient_shape": "ste", "sigmoid_scale": 4.0},
    ),
    GateCard(
        "learned_threshold",
        "learned threshold pruning, LTP (Azarian et al. 2020): soft mask on weight scores",
        stochastic=False,
        estimator="deterministic",
        options={"temperature_fraction": 0.1, "final_fraction": 0.01},
    ),
    GateCard(
        "diffprune",
        "DiffPrune-style gates (after Shulman 2020): annealed stretched sigmoid, exact 0s",
        stochastic=True,
        estimator="reparameterisation",
        fractional_scale=True,
        options={
            "init_drop_rate": 0.5,
            "stochastic": True,
            "sigma": 0.1,
            "tau0": 1.0,
            "tau_min": 0.05,
        },
    ),
)


_BY_NAME: dict[str, GateCard] = {card.name: card for card in BUILT_IN}


def built_in_card(name: str) -> GateCard:
    """The card of built-in method ``name``; a KeyError for any other name (only the built-in
    modules ask)."""
    if name not in _BY_NAME:
        raise KeyError(f"no built-in gate card named {name!r}")
    return _BY_NAME[name]
