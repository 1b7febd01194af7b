"""The cost penalty a gated step adds to the loss, and the push that makes its gates decide.

Both read the trial's ``penalty_lambda`` and ``penalty_target`` and work on cost ratios
(``pruning.cost.CostModel``), so the same lambda means the same pull on every model.
"""

from __future__ import annotations

import math

import torch

from archsearch.config import TrialConfig
from archsearch.cost_gap import GAP_BAND
from archsearch.pruning.cost import CostModel

#: the target penalty's logarithm sees at least this share of the target, so a network
#: whose gates all closed is pulled back up with a finite gradient
MISS_FLOOR = 1e-2


def penalty(expected: torch.Tensor, hard: torch.Tensor, config: TrialConfig) -> torch.Tensor:
    """The cost penalty, on the cost of the network hardening would keep now (``hard``, a
    number) with the gradient of the gates' differentiable ``expected`` cost.

    Without a target: lambda * cost ratio. With a target T: lambda * ln(ratio / T)^2, so a
    miss by a factor costs the same at every target; the squared distance used before let
    small targets end 2-5x above themselves (benchmarks/RESULTS.md, "Gates reach their
    targets"). Taking the value from the hard masks is what makes the penalty pull on the
    network that is shipped, not on a soft average of it (docs/gates.md, "The penalty")."""
    if config.penalty_target is None:
        if hard is expected:  # the caller measured no hard masks: the value is the same
            return config.penalty_lambda * expected
        return config.penalty_lambda * (hard.detach() + (expected - expected.detach()))
    hard = hard.detach()
    target = config.penalty_target
    miss = torch.log(hard.clamp_min(target * MISS_FLOOR) / target)
    # the gradient of ln(expected), a relative pull, bounded below the target by 1 / target
    # so a network whose hard masks all closed (expected near 0) is not thrown back open
    relative = (expected - expected.detach()) / expected.detach().clamp_min(target)
    return config.penalty_lambda * (miss**2 + 2 * miss * relative)


#: the budget the penalty on undecided groups is measured against when there is no target
PLAIN_BUDGET = 0.05


def undecided_penalty(
    keep: dict[str, torch.Tensor],
    cost: CostModel,
    config: TrialConfig,
    weight: float,
    hard: torch.Tensor,
) -> torch.Tensor:
    """weight * lambda * the expected cost of groups still undecided (keep * (1 - keep)), as a
    share of the target (of ``PLAIN_BUDGET`` without one), times ``above_band_relief``.

    A stochastic gate trains on samples of its keep probabilities but ships its hard mask;
    while the probabilities sit near 1/2 the two are different networks. Ramped in by the
    caller over gated training, this term pushes each group towards the side of 1/2 it is
    on, so the network trained on becomes the network shipped. Dividing by the target keeps
    its balance with the target penalty, whose pull is relative too, at every target."""
    undecided = {name: p * (1.0 - p) for name, p in keep.items()}
    budget = config.penalty_target or PLAIN_BUDGET
    term = weight * config.penalty_lambda * cost.ratio(undecided) / budget
    if config.penalty_target is None:
        return term
    return term * above_band_relief(hard, config.penalty_target)


def above_band_relief(hard: torch.Tensor, target: float) -> torch.Tensor:
    """1 while the hardened cost is at or below the target, falling to 0 at the band's top.

    The push towards 1/2's far side holds a kept group whose keep probability is p against
    the target's pull until the miss ln(hard / T) exceeds polarisation * (2p - 1) / 2: at
    weight 5, a group at p = 0.6 stays until the network is 65% over its target. Where a
    group is a whole unit that is a network stuck above its band (L0-ARM, LeNet-300-100
    neurons asked for 2%: 2.71%, 8 first-layer units, with the push; 2.32%, 7 units, without
    it), so the push gives way as the cost rises through the band. A tensor, so a GPU step
    does not wait for the host."""
    miss = torch.log(hard.detach().clamp_min(target * MISS_FLOOR) / target)
    return (1.0 - miss.clamp_min(0.0) / math.log(GAP_BAND)).clamp(0.0, 1.0)
