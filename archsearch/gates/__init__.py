"""Gate methods behind one base class and one registry.

Importing this package registers the six built-in methods, in this order (their formulas:
docs/gates.md).
"""

from archsearch.gates import (  # noqa: F401, I001  (registration order is the listing order)
    hard_concrete,
    arm,
    gumbel_softmax,
    trainable_gate,
    learned_threshold,
    diffprune,
)
from archsearch.gates.base import Gate
from archsearch.gates.registry import (
    GATES,
    GateInfo,
    create_gate,
    get_gate_info,
    list_gates,
    register_gate,
)

__all__ = [
    "GATES",
    "Gate",
    "GateInfo",
    "create_gate",
    "get_gate_info",
    "list_gates",
    "register_gate",
]
