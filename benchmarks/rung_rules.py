"""Which rung rule keeps the trials that end on the front (issue 9, item 2).

Usage:
  python benchmarks/rung_rules.py read --tracking-uri sqlite:///m.db --experiment NAME \
      --out curves.json                      # once per FIFO search, appended to
  python benchmarks/rung_rules.py table curves.json [--rungs 1 3] [--eta 3]
  python benchmarks/rung_rules.py timeline curves.json [--slots 2]
  python benchmarks/rung_rules.py ratios curves.json [--rungs 1 3]

A rung rule is judged on searches that stopped nothing (FIFO): there every trial's per-epoch
curve runs to its end, so it is known which trials end on the final front. ``read`` keeps,
for every trial that ran to its end, its gate, granularity and ``penalty.lambda``, its
validation accuracy and hard-mask cost ratio after each gated epoch (the epoch reports
MOASHA ranks), when it started, its final validation and test accuracy and FLOPs ratio, and
whether it met the search's constraints.

``table`` replays asynchronous successive halving on those curves with each rule of
``RULES``: trials reach a rung in the order they started; at each rung a trial goes on when
it ranks in the top ``ceil(n / eta)`` of the ``n`` results recorded there so far, itself
included; a trial stopped at a rung is not recorded at later ones. Per rule and search:

- ``front kept``: members of the final front (feasible trials, validation accuracy against
  FLOPs ratio) that pass every rung, of all members;
- ``kept``: trials that pass every rung, of all trials;
- ``epochs trained``: the epochs the replay trains (a trial stopped at a rung trains that
  many), as a share of those of running every trial to its end;
- ``HV kept / all``: the yardstick (``search_efficiency.hypervolume_at``) of the trials that
  pass, against that of every trial; ``structured`` the same over the structured trials.

The rows named "hypervolume of the feasible" ran as "hypervolume above 0.8" in RESULTS.md
sections before 2026-12-07: the same results, but their shares were measured from the floor
(the box's bottom raised to 0.8) instead of from chance, as ``exclusive_shares`` did then.

A replay does not see what stopping would have changed (the freed slots, the sampler's next
proposals); it judges the rule alone, on the same trials.

``timeline`` adds the freed slots, still with the same proposals: an event simulation of the
search's trials, in the order they started, on ``--slots`` slots, each trial's epochs taking its own
measured time (its ``trial_seconds`` over its epochs), once run to their ends (FIFO) and once with
the shipped rung rule (``hypervolume`` over the results at or above the search's accuracy floor,
each granularity apart), and once more with that rule on costs projected to the end of the gated
phase (``_projected``, tried and not kept). It prints the yardstick of each at 3, 6, 9 and 12
minutes and when each reaches FIFO's final figure. What it leaves out is the sampler: in a real
search the trials MOASHA stops are told to the sampler, and its next proposals differ.

``ratios``: per gate and granularity, the median (and range) of a trial's cost after its last
gated epoch over its cost at each rung, over the trials that ran to their end: how far each
method's cost still falls after a rung.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import statistics
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from search_efficiency import hypervolume_at, minutes_to_reach

from archsearch.pareto import non_dominated, nondominated_ranks
from archsearch.rungs import RungResult, cost_bin, keep_count, rung_order

#: a rule orders one rung's results (trial id -> (accuracy, cost)), best first, given every
#: trial's record (for what the rule reads beyond the rung's two numbers)
Rule = Callable[[Mapping[str, RungResult], Mapping[str, dict[str, Any]]], list[str]]


def _nondominated_order(results: Mapping[str, RungResult], _trials: Any) -> list[str]:
    """``scheduler.rank: nondominated``: plain non-dominated sorting on (accuracy now, cost
    now), ties by accuracy."""
    return rung_order(results, rank="nondominated")


def _hypervolume_order(results: Mapping[str, RungResult], _trials: Any) -> list[str]:
    """``scheduler.rank: hypervolume``: non-dominated sorting, ties by each result's own
    share of the yardstick's box."""
    return rung_order(results, rank="hypervolume")


def _hypervolume_feasible(results: Mapping[str, RungResult], _trials: Any) -> list[str]:
    """``hypervolume`` in a search constrained to ``val_accuracy >= 0.8`` (the shipped file):
    a result below it holds no share of the box, the others their share from chance."""
    return rung_order(results, rank="hypervolume", accuracy_floor=0.8)


def _cost_bins(results: Mapping[str, RungResult], _trials: Any) -> list[str]:
    """``scheduler.rank: cost_bins``: the epsilon-net in log cost now."""
    return rung_order(results, rank="cost_bins")


def _round_robin(results: Mapping[str, RungResult], key: Callable[[str], Any]) -> list[str]:
    """Best accuracy first within each bin of ``key``; every bin's r-th before any (r+1)-th,
    a round's picks by non-dominated rank on (accuracy, cost now), then accuracy."""
    arrival = {t: i for i, t in enumerate(results)}
    bins: dict[Any, list[str]] = {}
    for t in sorted(results, key=lambda t: (-results[t][0], results[t][1], arrival[t])):
        bins.setdefault(key(t), []).append(t)
    order: list[str] = []
    for r in range(max((len(b) for b in bins.values()), default=0)):
        picks = [b[r] for b in bins.values() if len(b) > r]
        ranks = nondominated_ranks([results[t] for t in picks], ("max", "min"))
        rank_of = dict(zip(picks, ranks, strict=True))
        order += sorted(picks, key=lambda t: (rank_of[t], -results[t][0], arrival[t]))
    return order


def _lambda_bins(decades: float, by_granularity: bool) -> Rule:
    """Bins of ``decades`` of the trial's lambda (and its granularity): a trial's lambda says
    where its cost will end, which its cost at the rung does not yet."""

    def order(results: Mapping[str, RungResult], trials: Mapping[str, dict[str, Any]]) -> list[str]:
        def key(t: str) -> tuple:
            lam = max(trials[t]["lambda"], 1e-12)
            cell = math.floor(math.log10(lam) / decades)
            return (cell, trials[t]["granularity"]) if by_granularity else (cell,)

        return _round_robin(results, key)

    return order


def _nondominated_by_granularity(
    results: Mapping[str, RungResult], trials: Mapping[str, dict[str, Any]]
) -> list[str]:
    """``nondominated`` within each granularity, the granularities' orders interleaved."""
    strata: dict[str, list[str]] = {}
    for t in rung_order(results, rank="nondominated"):
        strata.setdefault(trials[t]["granularity"], []).append(t)
    order: list[str] = []
    for r in range(max((len(s) for s in strata.values()), default=0)):
        order += [s[r] for s in strata.values() if len(s) > r]
    return order


def _cost_bins_by_granularity(
    results: Mapping[str, RungResult], trials: Mapping[str, dict[str, Any]]
) -> list[str]:
    """The shipped log-cost bins, each granularity binned apart."""
    return _round_robin(results, lambda t: (cost_bin(results[t][1]), trials[t]["granularity"]))


RULES: dict[str, Rule] = {
    "nondominated": _nondominated_order,
    "cost_bins": _cost_bins,
    "hypervolume": _hypervolume_order,
    "nondominated, each granularity in turn": _nondominated_by_granularity,
    "nondominated, each granularity apart": _nondominated_order,
    "hypervolume, each granularity apart": _hypervolume_order,
    "hypervolume of the feasible, each granularity apart": _hypervolume_feasible,
    "hypervolume of the feasible, each gate and granularity apart": _hypervolume_feasible,
    "log-cost bins x granularity": _cost_bins_by_granularity,
    "lambda bins, 1 decade": _lambda_bins(1.0, False),
    "lambda bins, 0.5 decade": _lambda_bins(0.5, False),
    "lambda bins, 1 decade x granularity": _lambda_bins(1.0, True),
}
#: rules that rank a trial against its peers only, keeping the top 1/eta of those, and what
#: makes two trials peers: the granularity (MOASHA with ``sampler.stratify: granularity``) or
#: the granularity and the gate (a rule of this replay only; no scheduler setting does it)
APART: dict[str, tuple[str, ...]] = {
    name: ("granularity", "gate") if "each gate and granularity apart" in name else ("granularity",)
    for name in RULES
    if name.endswith("apart")
}


def _peers(
    recorded: Mapping[str, RungResult],
    trial_id: str,
    by_id: Mapping[str, dict[str, Any]],
    apart: tuple[str, ...],
) -> dict[str, RungResult]:
    """The results at a rung ``trial_id`` is ranked against: those of the trials sharing its
    values of ``apart`` (every result when ``apart`` is empty), in recorded order."""
    own = [by_id[trial_id][key] for key in apart]
    return {t: r for t, r in recorded.items() if [by_id[t][key] for key in apart] == own}


def replay(
    trials: list[dict[str, Any]],
    rule: Rule,
    rungs: tuple[int, ...],
    eta: int,
    apart: tuple[str, ...] = (),
) -> tuple[set[str], float]:
    """The ids of the trials that pass every rung under ``rule``, and the share of the
    epochs of running every trial to its end that the replay trains. ``apart``: a trial is
    ranked against the results of the trials that share its values of these keys only."""
    by_id = {t["id"]: t for t in trials}
    alive = [t["id"] for t in sorted(trials, key=lambda t: t["started"])]
    spent = {t["id"]: t["epochs"] for t in trials}
    for epoch in rungs:
        recorded: dict[str, RungResult] = {}
        survivors = []
        for trial_id in alive:
            curve = by_id[trial_id]["curve"]
            if len(curve) < epoch:
                survivors.append(trial_id)  # no report at this rung: it runs on
                continue
            recorded[trial_id] = tuple(curve[epoch - 1])
            peers = _peers(recorded, trial_id, by_id, apart)
            kept = rule(peers, by_id)[: keep_count(len(peers), eta)]
            if trial_id in kept:
                survivors.append(trial_id)
            else:
                spent[trial_id] = epoch
        alive = survivors
    return set(alive), sum(spent.values()) / max(1, sum(t["epochs"] for t in trials))


def final_front(trials: list[dict[str, Any]]) -> set[str]:
    feasible = [t for t in trials if t["feasible"]]
    flags = non_dominated([[t["val_accuracy"], t["flops_ratio"]] for t in feasible], ["max", "min"])
    return {t["id"] for t, on in zip(feasible, flags, strict=True) if on}


def _volume(trials: list[dict[str, Any]]) -> float:
    # the curves carry no end times: every feasible trial counts as ended
    return hypervolume_at([{**t, "ended_s": 0.0} for t in trials if t["feasible"]], 0.0)


def table(searches: list[dict[str, Any]], rungs: tuple[int, ...], eta: int) -> list[str]:
    lines = [
        "| rule | search | front kept | kept | epochs trained | HV kept / all "
        "| structured HV kept / all |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, rule in RULES.items():
        for search in searches:
            trials = search["trials"]
            structured = [t for t in trials if t["granularity"] != "weight"]
            front = final_front(trials)
            kept, spent = replay(trials, rule, rungs, eta, APART.get(name, ()))
            lines.append(
                f"| {name} | {search['label']} | {len(front & kept)} / {len(front)} "
                f"| {len(kept)} / {len(trials)} | {100 * spent:.0f}% "
                f"| {_volume([t for t in trials if t['id'] in kept]):.3f} / {_volume(trials):.3f} "
                f"| {_volume([t for t in structured if t['id'] in kept]):.3f} / "
                f"{_volume(structured):.3f} |"
            )
    return lines


#: the shipped rule: ``rank: hypervolume`` with the search's floor, each granularity apart
SHIPPED_RULE = "hypervolume of the feasible, each granularity apart"


def simulate(
    trials: list[dict[str, Any]],
    rungs: tuple[int, ...],
    eta: int,
    slots: int,
    projected: bool = False,
) -> list[dict[str, Any]]:
    """The trials that run to their end, each with ``ended_s``: seconds after the first
    trial started, when ``slots`` trials run at a time in the order they started, a trial
    kept at every rung by the shipped rule (``rungs`` empty: FIFO). ``projected``: the rule
    ranks each cost times its gate and granularity's median end ratio over the trials ended
    by then (``_projected``)."""
    rule, apart = RULES[SHIPPED_RULE], APART[SHIPPED_RULE]
    order = sorted(trials, key=lambda t: t["ended"] / 1000 - t["seconds"])
    per_epoch = {t["id"]: t["seconds"] / t["epochs"] for t in order}
    by_id = {t["id"]: t for t in order}
    recorded: dict[int, dict[str, RungResult]] = {epoch: {} for epoch in rungs}
    events: list[tuple[float, int, str, int]] = []  # (time, tie, trial, epoch it reaches)
    waiting, done, tie = list(order), [], 0

    def reach(trial: dict[str, Any], now: float, after: int) -> None:
        nonlocal tie
        nxt = min([e for e in rungs if after < e < trial["epochs"]], default=trial["epochs"])
        arrival = now + (nxt - after) * per_epoch[trial["id"]]
        heapq.heappush(events, (arrival, tie, trial["id"], nxt))
        tie += 1

    for _ in range(slots):
        if waiting:
            reach(waiting.pop(0), 0.0, 0)
    while events:
        now, _, trial_id, epoch = heapq.heappop(events)
        trial = by_id[trial_id]
        if epoch < trial["epochs"]:  # a rung
            recorded[epoch][trial_id] = tuple(trial["curve"][epoch - 1])
            peers = _peers(recorded[epoch], trial_id, by_id, apart)
            if projected:
                peers = _projected(peers, epoch, done, by_id)
            if trial_id in rule(peers, by_id)[: keep_count(len(peers), eta)]:
                reach(trial, now, epoch)
                continue
        else:
            done.append({**trial, "ended_s": now})
        if waiting:
            reach(waiting.pop(0), now, 0)
    return done


def end_ratio(rung_costs: list[float], end_costs: list[float]) -> float | None:
    """The median ratio of end cost to rung cost over a group's ended trials; None with
    fewer than two (one trial is no measure of a group)."""
    ratios = [end / rung for rung, end in zip(rung_costs, end_costs, strict=True) if rung > 0]
    return statistics.median(ratios) if len(ratios) >= 2 else None


def _projected(
    peers: dict[str, RungResult],
    epoch: int,
    done: list[dict[str, Any]],
    by_id: Mapping[str, dict[str, Any]],
) -> dict[str, RungResult]:
    """``peers`` at their costs times their group's end ratio (``end_ratio``) over the trials
    in ``done``; the last gated epoch's cost is the end cost. Tried as a rung rule and not
    kept: the accuracy at the rung is not projected with the cost (benchmarks/RESULTS.md,
    "MOASHA on the same proposals")."""

    def group(trial: dict[str, Any]) -> tuple[str, str]:
        return trial["gate"], trial["granularity"]

    ratios = {}
    for key in {group(by_id[t]) for t in peers}:
        ended = [t for t in done if group(t) == key and len(t["curve"]) >= epoch]
        ratios[key] = end_ratio(
            [t["curve"][epoch - 1][1] for t in ended], [t["curve"][-1][1] for t in ended]
        )
    return {t: (acc, cost * (ratios[group(by_id[t])] or 1.0)) for t, (acc, cost) in peers.items()}


def timeline(search: dict[str, Any], rungs: tuple[int, ...], eta: int, slots: int) -> list[str]:
    """FIFO against MOASHA on one search's trials and proposals (module docstring)."""
    trials = [t for t in search["trials"] if t.get("seconds")]
    fifo = simulate(trials, (), eta, slots)
    moasha = simulate(trials, rungs, eta, slots)
    projected = simulate(trials, rungs, eta, slots, projected=True)
    final = _volume(trials)
    lines = [
        f"{search['label']}: {len(trials)} trials on {slots} slots, rungs {list(rungs)}, eta {eta}",
        "| schedule | run to their end | last end (min) | HV @ 3 | HV @ 6 | HV @ 9 | HV @ 12 "
        "| final HV | min to FIFO's final HV |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    schedules = (
        ("FIFO", fifo),
        ("MOASHA", moasha),
        ("MOASHA, costs projected (not kept)", projected),
    )
    for name, done in schedules:
        feasible = [t for t in done if t["feasible"]]
        at = [hypervolume_at(feasible, minutes * 60) for minutes in (3, 6, 9, 12)]
        reached = minutes_to_reach(feasible, final - 1e-12)
        lines.append(
            f"| {name} | {len(done)} | {max(t['ended_s'] for t in done) / 60:.1f} | "
            + " | ".join(f"{v:.3f}" for v in at)
            + f" | {hypervolume_at(feasible, math.inf):.3f} | "
            + (f"{reached:.1f} |" if reached is not None else "never |")
        )
    return lines


def ratios(search: dict[str, Any], rungs: tuple[int, ...]) -> list[str]:
    """The ``ratios`` table of one search (module docstring)."""
    groups: dict[tuple[str, str], list[list[float]]] = {}
    for trial in search["trials"]:
        curve = trial["curve"]
        if len(curve) > max(rungs):
            ratios_at = [
                curve[-1][1] / curve[e - 1][1] if curve[e - 1][1] > 0 else math.nan for e in rungs
            ]
            groups.setdefault((trial["gate"], trial["granularity"]), []).append(ratios_at)
    head = " | ".join(f"end / rung {e}" for e in rungs)
    lines = [f"| gate | granularity | trials | {head} |", "|---|---|---:|" + "---|" * len(rungs)]
    for (gate, granularity), rows in sorted(groups.items()):
        cells = []
        for index in range(len(rungs)):
            values = [r[index] for r in rows if math.isfinite(r[index])]
            cells.append(
                f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"
                if values
                else "-"
            )
        lines.append(f"| {gate} | {granularity} | {len(rows)} | " + " | ".join(cells) + " |")
    return lines


def read(experiment: str, tracking_uri: str) -> list[dict[str, Any]]:
    """Every trial of the search's latest run that ran to its end, with its curve."""
    from archsearch.run_rows import row_from_run
    from archsearch.tracking.endings import FINISHED, INFEASIBLE, ending_of_run
    from archsearch.tracking.store import child_runs, open_search

    search = open_search(experiment, tracking_uri)
    client, records = search.client, []
    runs = child_runs(client, search.experiment_id, search.parent.info.run_id)
    for run in runs:
        ending = ending_of_run(run)
        if ending not in (FINISHED, INFEASIBLE):  # stopped, failed or running: no end
            continue
        row = row_from_run(run)
        history = {
            key: {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
            for key in ("epoch/val_accuracy", "epoch/hard_cost_ratio")
        }
        epochs = sorted(history["epoch/hard_cost_ratio"])  # gated epochs only
        records.append(
            {
                "id": run.info.run_id,
                "started": run.info.start_time,
                # a trial's run is written when it ends: its start is its end less its time
                "ended": run.info.end_time,
                "seconds": run.data.metrics.get("trial_seconds"),
                "gate": row["gate"],
                "granularity": row["granularity"],
                "lambda": row["penalty.lambda"],
                "epochs": len(history["epoch/val_accuracy"]),  # gated and fine-tuning
                "curve": [
                    [history["epoch/val_accuracy"][e], history["epoch/hard_cost_ratio"][e]]
                    for e in epochs
                ],
                "val_accuracy": row["val_accuracy"],
                "test_accuracy": row["test_accuracy"],
                "flops_ratio": row["flops_ratio"],
                "feasible": ending == FINISHED,
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    get = commands.add_parser("read", help="a FIFO search's trial curves, appended to --out")
    get.add_argument("--tracking-uri", required=True)
    get.add_argument("--experiment", required=True)
    get.add_argument("--label", help="the search's name in the table (default: experiment)")
    get.add_argument("--out", type=Path, required=True)
    show = commands.add_parser("table", help="every rule replayed on every search read")
    show.add_argument("curves", type=Path)
    show.add_argument("--rungs", nargs="+", type=int, default=[1, 3])
    show.add_argument("--eta", type=int, default=3)
    line = commands.add_parser("timeline", help="FIFO against MOASHA in time, same proposals")
    line.add_argument("curves", type=Path)
    line.add_argument("--rungs", nargs="+", type=int, default=[1, 3])
    line.add_argument("--eta", type=int, default=3)
    line.add_argument("--slots", type=int, default=2)
    ratio = commands.add_parser("ratios", help="how far each method's cost falls after a rung")
    ratio.add_argument("curves", type=Path)
    ratio.add_argument("--rungs", nargs="+", type=int, default=[1, 3])
    args = parser.parse_args()
    if args.command == "read":
        searches = json.loads(args.out.read_text()) if args.out.exists() else []
        trials = read(args.experiment, args.tracking_uri)
        searches.append({"label": args.label or args.experiment, "trials": trials})
        args.out.write_text(json.dumps(searches, indent=1) + "\n")
        print(f"{len(trials)} trials read")
        return
    searches = json.loads(args.curves.read_text())
    if args.command == "ratios":
        for search in searches:
            print(f"{search['label']}\n" + "\n".join(ratios(search, tuple(args.rungs))) + "\n")
        return
    if args.command == "timeline":
        for search in searches:
            print("\n".join(timeline(search, tuple(args.rungs), args.eta, args.slots)) + "\n")
        return
    print("\n".join(table(searches, tuple(args.rungs), args.eta)))


if __name__ == "__main__":
    main()
