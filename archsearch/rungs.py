"""Successive halving's rungs, and the rule that says which trial goes on at a rung (MOASHA).

Pure maths on numbers. The scheduler (``archsearch/search/moasha.py``) records a trial's
(validation accuracy, hard-mask cost ratio) when the trial reaches a rung and asks
``continues``: the trial goes on only if it is among the first ``ceil(n / eta)`` of the ``n``
results recorded at that rung, itself included (rounded up, so the first trial to reach a
rung always goes on, as in asynchronous successive halving).

The order, and why it is not plain non-dominated sorting
--------------------------------------------------------
At a rung a trial's cost is still falling: the penalty keeps pulling after it. Ranked plainly
on (accuracy, cost now), trials that will end cheap but are still expensive lose to trials
that are already cheap, and the final front loses most of its members (issue 9 measured 5-6
of 11-12 kept). So the rung compares like with like, an epsilon-net in log cost:

1. each result falls in a bin of ``bin_decades`` decades of its cost ratio (0.5:
   (0.316, 1], (0.1, 0.316], ...), a cost of 0 in the lowest bin (``COST_FLOOR``);
2. within a bin, results are ordered by accuracy alone (cost differences within a bin are
   what the rung cannot judge yet): higher accuracy first, then lower cost, then the result
   recorded first;
3. round r takes the r-th result of every bin, so every bin's best comes before any bin's
   runner-up: each cost level keeps its best trial before any level keeps two;
4. within a round: non-dominated sorting of that round's results (accuracy max, cost min),
   and inside one non-dominated rank the tie-break is higher accuracy, then lower cost, then
   the result recorded first. Accuracy breaks ties first because at a rung it is the
   steadier of the two signals.

A result with a NaN or infinite value comes after every finite one, in recorded order.

That measurement was on trials trained from scratch. From the dense reference (the default
``init``) a trial has most of its cost drop behind it at a rung, and there plain sorting
(``rank="nondominated"``: step 4 over every result, no bins) kept more of the final front in
replays of whole searches' curves (``benchmarks/rung_rules.py``) and reached a FIFO search's
final hypervolume sooner in whole searches; the bins stay on offer (``rank="cost_bins"``).

Plain sorting's tie-break by accuracy has a cost when many results share the first rank: the
rank's most accurate members are its dearest, so its cheap end is stopped first. Ranked among
weight-sparse trials alone (``sampler.stratify``), the trials that would have ended at a
thousandth of the FLOPs, the part of the front worth most to the yardstick, were stopped.
``rank="hypervolume"``, the default, keeps the ranks and breaks ties within one by each
result's exclusive share of the yardstick's box among its rank
(``archsearch.hypervolume.exclusive_shares``), larger first, then as in step 4: a rank's two
ends and the results beside its widest gaps go on before results crowded among near-equal
neighbours. A search with a ``val_accuracy`` minimum (``accuracy_floor``) gives a result below
it no share: it is never on the search's front, however cheap. The others' shares are
measured from chance, as the yardstick measures the front they can join. Measured from the
floor, a cheap result at 84% stood 4 points high against 10 for a dear one at 90%, where the
yardstick gives them 74 and 80, and three of four 12-minute searches reached a FIFO search's
final hypervolume later (benchmarks/RESULTS.md, "MOASHA weighs a rung result as the
yardstick does"). In 12-minute searches of the shipped ``lenet300_fashion.yaml`` (one stratum
per granularity) the share tie-break ended at a hypervolume of 0.829 and 0.861 against plain
sorting's 0.614 and 0.701 (benchmarks/RESULTS.md, "MOASHA: ties by share of the box").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from archsearch.hypervolume import exclusive_shares
from archsearch.pareto import nondominated_ranks

#: costs below this (a network whose gates all closed) share the lowest bin
COST_FLOOR = 1e-6

#: the default width of a cost bin, in decades of the cost ratio
BIN_DECADES = 0.5

#: (validation accuracy, cost ratio) of one trial at one rung
RungResult = tuple[float, float]

#: how a rung orders its results: ``cost_bins`` (the epsilon-net above), ``nondominated``
#: (plain non-dominated sorting of every result, ties as in step 4) or ``hypervolume`` (the
#: same sorting, ties within a rank by each result's own share of the yardstick's box)
RANKS: tuple[str, ...] = ("cost_bins", "nondominated", "hypervolume")
#: the default: with strata it kept the front's cheap end, which ``nondominated`` stopped
#: (benchmarks/RESULTS.md, "MOASHA: ties by share of the box")
DEFAULT_RANK = "hypervolume"


def rung_epochs(grace: int, eta: int, epochs: int) -> tuple[int, ...]:
    """The gated epochs at which trials are compared: ``grace * eta**k`` for as long as
    ``eta`` times the rung still fits in ``epochs``.

    The end of the schedule is the top level, as in Hyperband (levels ``epochs / eta**k``): a
    trial kept at a rung trains at least ``eta`` times as long before it is judged again. A
    rung closer to the end stops trials that have spent most of their compute to save the
    little that is left: at 10 epochs and eta 3 a rung at epoch 9 stopped 16 trials in four
    12-minute searches (3 to 6 each), every one 9 of its 12 epochs in, while only 31 trials
    finished in those searches (benchmarks/RESULTS.md, "Search efficiency")."""
    if grace < 1 or eta < 2:
        raise ValueError(f"grace must be >= 1 and eta >= 2, got grace={grace}, eta={eta}")
    rungs, epoch = [], grace
    while epoch * eta <= epochs:
        rungs.append(epoch)
        epoch *= eta
    return tuple(rungs)


def keep_count(recorded: int, eta: int) -> int:
    """How many of the results recorded at a rung go on: the top 1/eta, rounded up."""
    return math.ceil(recorded / eta)


def cost_bin(cost: float, bin_decades: float = BIN_DECADES) -> int:
    """The log-cost bin of a cost ratio: 0 for (10**-bin_decades, 1], 1 for the next, ..."""
    return math.floor(-math.log10(max(cost, COST_FLOOR)) / bin_decades + 1e-9)


def rung_order(
    results: Mapping[str, RungResult],
    bin_decades: float = BIN_DECADES,
    rank: str = DEFAULT_RANK,
    accuracy_floor: float | None = None,
) -> list[str]:
    """The trial ids of one rung's results, best first, by the rule in the module docstring
    (``rank`` names which). ``results`` in recorded order (a dict keeps insertion order).
    ``accuracy_floor``: the search's accuracy constraint, below which ``hypervolume`` counts
    a result's share as nothing."""
    arrival = {trial_id: index for index, trial_id in enumerate(results)}
    finite = [t for t, (acc, cost) in results.items() if math.isfinite(acc + cost)]
    rest = [t for t, (acc, cost) in results.items() if not math.isfinite(acc + cost)]

    def within_bin(trial_id: str) -> tuple[float, float, int]:
        accuracy, cost = results[trial_id]
        return (-accuracy, cost, arrival[trial_id])

    if rank == "nondominated":
        return _by_rank(finite, results, within_bin) + rest
    if rank == "hypervolume":
        return _by_share(finite, results, within_bin, accuracy_floor) + rest
    if rank != "cost_bins":
        raise ValueError(f"rank must be one of {', '.join(RANKS)}, got {rank!r}")

    bins: dict[int, list[str]] = {}
    for trial_id in sorted(finite, key=within_bin):
        bins.setdefault(cost_bin(results[trial_id][1], bin_decades), []).append(trial_id)
    order: list[str] = []
    for round_index in range(max((len(b) for b in bins.values()), default=0)):
        picks = [b[round_index] for b in bins.values() if len(b) > round_index]
        order += _by_rank(picks, results, within_bin)
    return order + rest


def _by_rank(
    picks: Sequence[str], results: Mapping[str, RungResult], tie_break: Callable[[str], tuple]
) -> list[str]:
    """One round's picks by non-dominated rank, ties within a rank by ``tie_break``."""
    ranks = nondominated_ranks([results[t] for t in picks], ("max", "min"))
    rank_of = dict(zip(picks, ranks, strict=True))
    return sorted(picks, key=lambda t: (rank_of[t], tie_break(t)))


def _by_share(
    picks: Sequence[str],
    results: Mapping[str, RungResult],
    tie_break: Callable[[str], tuple],
    accuracy_floor: float | None,
) -> list[str]:
    """By non-dominated rank; within a rank, the result that alone dominates the largest
    share of the yardstick's box (log10 cost in [-3, 0] x accuracy in [0.1, 1]) among its
    rank first, then ``tie_break``: a rank's extremes and the ends of its widest gaps before
    results crowded among neighbours."""
    ranks = nondominated_ranks([results[t] for t in picks], ("max", "min"))
    rank_of = dict(zip(picks, ranks, strict=True))
    share: dict[str, float] = {}
    for rank in set(ranks):
        members = [t for t in picks if rank_of[t] == rank]
        shares = exclusive_shares([results[t] for t in members], accuracy_floor)
        share.update(zip(members, shares, strict=True))
    return sorted(picks, key=lambda t: (rank_of[t], -share[t], tie_break(t)))


def continues(
    results: Mapping[str, RungResult],
    trial_id: str,
    eta: int,
    bin_decades: float = BIN_DECADES,
    rank: str = DEFAULT_RANK,
    accuracy_floor: float | None = None,
) -> bool:
    """Whether ``trial_id``, whose result is among ``results`` (everything recorded at its
    rung, itself included), ranks in the top ``ceil(n / eta)`` and goes on."""
    if trial_id not in results:
        raise KeyError(f"trial {trial_id} has no result recorded at this rung")
    kept = rung_order(results, bin_decades, rank, accuracy_floor)[: keep_count(len(results), eta)]
    return trial_id in kept
