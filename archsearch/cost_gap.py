"""When the network gates trained on and the network hardening keeps are too far apart.

A gate trains on samples whose cost is its differentiable expected cost (the penalty's
gradient flows through it), but the subnetwork shipped is the one its hard masks keep. When
the two stay apart at the end of gated training, the trial trained one network and shipped
another; the trial's metrics, its run's tag and the progress line say so. Torch-free, so the
tracking side can read it cheaply.
"""

from __future__ import annotations

#: the hardened cost may differ from the expected cost by this factor either way before a
#: trial is flagged: the same band [0.8, 1.25] a target must land in
GAP_BAND = 1.25
#: ...and by at least this much of the dense cost, so near-empty networks are not flagged
GAP_FLOOR = 0.002


def cost_gap_is_large(expected: float, hard: float) -> bool:
    """Whether the penalty (on ``expected``) and hardening (``hard``) saw different networks:
    more than a factor ``GAP_BAND`` apart and more than ``GAP_FLOOR`` of the dense cost."""
    if abs(hard - expected) <= GAP_FLOOR:
        return False
    low, high = sorted((expected, hard))
    return low <= 0 or high / low > GAP_BAND


def describe_cost_gap(expected: float, hard: float) -> str:
    """One phrase for the run's tag, the progress line and ``archsearch train``."""
    return (
        f"gates trained on {100 * expected:.1f}% of the dense cost in expectation, "
        f"hardening kept {100 * hard:.1f}%"
    )
