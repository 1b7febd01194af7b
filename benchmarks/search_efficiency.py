"""Search efficiency: the front each search policy buys in the same wall-clock time (issue 9).

Usage:
  python benchmarks/search_efficiency.py run --arms A B C D --seeds 0 1 --budget 12m \
      --out benchmarks/search_efficiency.json        # one arm at a time, never in parallel
  python benchmarks/search_efficiency.py cut front_quality.json --seed 0 --store COPY.db \
      --out benchmarks/search_efficiency.json        # arm S: a 30-minute search's first 12
  python benchmarks/search_efficiency.py table benchmarks/search_efficiency.json \
      [--baselines benchmarks/magnitude_levels.json] [--plot benchmarks/search_efficiency.png]
  python benchmarks/search_efficiency.py slices benchmarks/cosine_moasha_search.json \
      --arm W --minutes 6 --versus K --versus-minutes 12   # where on the cost axis it trails
  python benchmarks/search_efficiency.py repeats benchmarks/cosine_moasha_search.json \
      --arm WC WC2 WC3 --versus K7 K8 K9     # the half-time target on repeated runs

Each arm is a real search of the bundled ``search_spaces/lenet300_fashion.yaml`` (LeNet-300-100
on Fashion-MNIST, 2 trials at a time, local Ray, an MLflow SQLite store of its own) ended by
its time budget:

- A: FIFO + TPE over ``penalty.lambda`` (the file as shipped)
- B: MOASHA (grace 1 epoch, eta 3) + TPE
- C: FIFO + random sampling
- D: B with ``penalty.target`` searched (log-uniform 0.5%-50%) and ``penalty.lambda`` fixed at 1
- E: A with ``penalty.target`` searched as in D (FIFO + TPE, the target the only cost knob)
- F: A with ``init: {from: reference}`` (every trial starts from the search's trained dense
  reference, the default since d262430; A-E set ``init: {from: scratch}``, as they ran)
- G: B from the reference (MOASHA + TPE, what B is to A, G is to F)
- S: the file exactly as shipped (FIFO, one TPE study per granularity, from the reference)
- M: S with MOASHA (grace 1 epoch, eta 3, ``rank: nondominated``: plain non-dominated
  sorting at the rungs, which ``rung_rules.py`` measured to keep more of the final front than
  the cost bins of B, D and G on trials that start from the reference)
- N: M with ``rank: cost_bins`` (the rung rule of B, D and G)
- P: M on the code that ranks a trial at a rung against its own stratum only (the file's
  ``sampler.stratify: granularity``); M ran before that, when every trial was ranked against
  all
- Q: P with ``rank: hypervolume`` (ties within a non-dominated rank broken by each result's
  own share of the yardstick's box, so a rank's cheap and dear ends go on before its middle)
- H: Q on the code that counts a rung result's share of the box above the search's accuracy
  constraint only (the file's ``val_accuracy >= 0.8``), not above chance; Q ran before that
- R: S with random sampling (one random sampler per granularity, FIFO): C on today's file
- T: S with ``sampler.start: spread`` (each study's first 10 trials a Latin hypercube)
- U: H with ``sampler.start: spread``, measured against T
- V: H from 3 gated epochs (``grace_epochs: 3``: one rung, at epoch 3 of 10), so a rung
  sees costs nearer where trials end
- K: S with ``train.finetune_lr_schedule: cosine``; W: K with MOASHA as H, measured against K
- X: W on code whose TPE counts only finished trials in its good set's size (ac8c289)
- Y: W on code that tells the sampler a stopped trial as FAIL, so TPE never sees it (a
  one-line change to ``StudySearch.on_trial_complete``, not kept)
- Z: W on code that tells the sampler a trial stopped after it passed a rung as FAIL and one
  stopped at the first rung as PRUNED (a three-line change there, not kept)
- J and L: K and W on code that told the sampler a finished trial's FLOPs as the yardstick's
  log-cost coordinate instead of the raw count (``searcher.told_values`` of 2497cda, reverted
  after; not kept); L is measured against J
- WT: W with ``penalty.target`` searched log-uniform over the whole box (0.1%-50%,
  ``SHIPPED_TARGET_RANGE``) and ``penalty.lambda`` fixed at 1: a trial's cost is asked for,
  not found; measured against K (the file searched by lambda)
- WC: W's settings on the code that weighs a feasible rung result's share of the box from
  chance, as the yardstick weighs the front (W ran when it was weighed from the search's
  accuracy floor); results below the floor still hold nothing

A record named by an arm and a digit (K7, K8, K9; WC2, WC3; WM2) is a repeated run of that
arm on the machine of 2026-12-07: a seed fixes a search's start-up draws, not its course (two
trials at once end in an order timing decides), so ``repeats`` judges the half-time target on
every run of an arm against every run of its FIFO arm, and on their medians.

Every arm carries the constraint ``val_accuracy >= 0.8`` (``CONSTRAINTS``): the sampler is told
of it, and a trial that violates it is tagged infeasible and never on a front or in a table.

The yardstick is the project's (``archsearch.hypervolume``): the share of the box log10(FLOPs ratio)
in [-3, 0] x accuracy in [0.1, 1] that the front dominates, with the points chosen on validation
accuracy and plotted at their test accuracy. ``table`` recomputes it from the finished trials that
had ended by 3, 6 and 12 minutes after the search's parent run started, so one run per arm and seed
gives the whole curve, and the minutes each arm took to reach the final hypervolume of the FIFO arm
it is measured against (``versus``: F for G, S for the arms of the shipped file, T for U, K for W,
X, Y, Z, WC, WT, WM and KM, J for L, A for the rest). Stopped (MOASHA, time budget) and failed
trials never count. The accuracy table gives, per FLOPs level, the test accuracy of the point
with the best validation accuracy at or under it, for all trials and for the neuron-granularity
(structured) ones alone; ``--baselines`` adds the rows ``magnitude_baseline.py --json`` writes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SPACE_FILE = REPO / "search_spaces" / "lenet300_fashion.yaml"
MOASHA = {"name": "moasha", "grace_epochs": 1, "eta": 3}
ARMS: dict[str, dict[str, Any]] = {
    "A": {"label": "FIFO + TPE over lambda", "sampler": "tpe", "scheduler": None, "by": "lambda"},
    "B": {"label": "MOASHA + TPE", "sampler": "tpe", "scheduler": MOASHA, "by": "lambda"},
    "C": {"label": "FIFO + random", "sampler": "random", "scheduler": None, "by": "lambda"},
    "D": {"label": "MOASHA + TPE, target", "sampler": "tpe", "scheduler": MOASHA, "by": "target"},
    "E": {"label": "FIFO + TPE, target", "sampler": "tpe", "scheduler": None, "by": "target"},
    "F": {
        "label": "FIFO + TPE over lambda, from the reference",
        "sampler": "tpe",
        "scheduler": None,
        "by": "lambda",
        "init": "reference",
    },
    "G": {
        "label": "MOASHA + TPE over lambda, from the reference",
        "sampler": "tpe",
        "scheduler": MOASHA,
        "by": "lambda",
        "init": "reference",
        "versus": "F",
    },
    "S": {"label": "the shipped file (FIFO)", "scheduler": None, "shipped": True, "versus": "S"},
    "N": {
        "label": "the shipped file with MOASHA, rank: cost_bins",
        "scheduler": {**MOASHA, "rank": "cost_bins"},
        "shipped": True,
        "versus": "S",
    },
    "M": {
        "label": "the shipped file with MOASHA, rank: nondominated",
        "scheduler": {**MOASHA, "rank": "nondominated"},
        "shipped": True,
        "versus": "S",
    },
    "P": {
        "label": "the shipped file with MOASHA, each stratum ranked apart",
        "scheduler": {**MOASHA, "rank": "nondominated"},
        "shipped": True,
        "versus": "S",
    },
    "Q": {
        "label": "the shipped file with MOASHA, rank: hypervolume",
        "scheduler": {**MOASHA, "rank": "hypervolume"},
        "shipped": True,
        "versus": "S",
    },
    "H": {
        "label": "the shipped file with MOASHA, rank: hypervolume above the constraint",
        "scheduler": {**MOASHA, "rank": "hypervolume"},
        "shipped": True,
        "versus": "S",
    },
    "V": {
        "label": "the shipped file with MOASHA (as H) from 3 gated epochs (grace 3: one rung)",
        "scheduler": {**MOASHA, "grace_epochs": 3, "rank": "hypervolume"},
        "shipped": True,
        "versus": "S",
    },
    "R": {
        "label": "the shipped file with random sampling (FIFO)",
        "scheduler": None,
        "shipped": True,
        "shipped_sampler": "random",
        "versus": "S",
    },
    "T": {
        "label": "the shipped file with a spread start (FIFO)",
        "scheduler": None,
        "shipped": True,
        "shipped_start": "spread",
        "versus": "T",
    },
    "U": {
        "label": "the shipped file with MOASHA (as H) and a spread start",
        "scheduler": {**MOASHA, "rank": "hypervolume"},
        "shipped": True,
        "shipped_start": "spread",
        "versus": "T",
    },
    "K": {
        "label": "the shipped file with a cosine fine-tuning (FIFO)",
        "scheduler": None,
        "shipped": True,
        "shipped_train": {"finetune_lr_schedule": "cosine"},
        "versus": "S",
    },
    "W": {
        "label": "the shipped file with a cosine fine-tuning and MOASHA (as H)",
        "scheduler": {**MOASHA, "rank": "hypervolume"},
        "shipped": True,
        "shipped_train": {"finetune_lr_schedule": "cosine"},
        "versus": "K",
    },
}
#: W's settings; the code it needs was reverted: run it from a git archive of ac8c289
ARMS["X"] = {
    **ARMS["W"],
    "label": "W on code whose TPE takes its good set from the finished trials alone",
}
#: W's settings; the code Y and Z need was never committed: see the module docstring
ARMS["Y"] = {**ARMS["W"], "label": "W with stopped trials unseen by TPE (told FAIL)"}
ARMS["Z"] = {**ARMS["W"], "label": "W with trials stopped after a rung unseen by TPE (told FAIL)"}
#: K's and W's settings; the code they need was reverted: run them from a git archive of
#: 2497cda, whose sampler is told costs on the yardstick's log scale (``told_values``)
ARMS["J"] = {**ARMS["K"], "label": "K, costs told to TPE on the yardstick's scale (FIFO)"}
ARMS["L"] = {
    **ARMS["W"],
    "label": "W, costs told to TPE on the yardstick's scale (MOASHA)",
    "versus": "J",
}
#: WT: down to the yardstick's left edge, where the shipped file's cheapest points lie
SHIPPED_TARGET_RANGE = {"loguniform": [0.001, 0.5]}
ARMS["WT"] = {
    **ARMS["W"],
    "label": "W with penalty.target searched, lambda 1 (MOASHA)",
    "shipped_target": SHIPPED_TARGET_RANGE,
}
ARMS["WC"] = {**ARMS["W"], "label": "W, rung shares of feasible results from chance (MOASHA)"}
#: WC with TPE modelling gate and lambda jointly (``sampler.multivariate``); KM: K with it
ARMS["WM"] = {**ARMS["WC"], "label": "WC with multivariate TPE (MOASHA)", "multivariate": True}
ARMS["KM"] = {
    **ARMS["K"],
    "label": "K with multivariate TPE (FIFO)",
    "multivariate": True,
    "versus": "K",
}
TARGET_RANGE = {"loguniform": [0.005, 0.5]}
#: every arm's constraint (the issue's "nothing below 80% accuracy"): infeasible trials are
#: tagged by the search and never on its front, so the tables and plot never count them
CONSTRAINTS = {"val_accuracy": {"min": 0.8}}
CHECKPOINTS_MIN = (3, 6, 12)
FLOPS_LEVELS = (0.01, 0.02, 0.05, 0.1, 0.25)


def arm_space(arm: str, seed: int, budget: str) -> dict[str, Any]:
    """The bundled space file, as a dict, changed the way ``arm`` says."""
    import yaml

    from archsearch.space.schema import _Loader  # the file's own reading: 1e-3 is a number

    raw = yaml.load(SPACE_FILE.read_text(), Loader=_Loader)
    settings = ARMS[arm]
    raw["name"] = f"efficiency-{arm}-{seed}"
    raw["trials"] = 10_000  # the time budget ends it
    raw["time_budget"] = budget
    if settings["scheduler"]:
        raw["scheduler"] = dict(settings["scheduler"])
    if settings.get("shipped"):  # sampler, constraint, init and lambda as the file sets them
        raw["sampler"]["seed"] = seed
        raw["sampler"]["name"] = settings.get("shipped_sampler", raw["sampler"]["name"])
        if "shipped_start" in settings:
            raw["sampler"]["start"] = settings["shipped_start"]
        if settings.get("multivariate"):
            raw["sampler"]["multivariate"] = True
        raw["train"].update(settings.get("shipped_train", {}))
        if "shipped_target" in settings:
            _search_by_target(raw["space"], settings["shipped_target"])
        return raw
    # one sampler over both granularities: the arms ran before the file set sampler.stratify
    raw["sampler"] = {"name": settings["sampler"], "seed": seed}
    raw["constraints"] = {metric: dict(bounds) for metric, bounds in CONSTRAINTS.items()}
    # A-E ran from scratch, the default before d262430; they say so now that it is not
    raw["init"] = {"from": settings.get("init", "scratch")}
    if settings["by"] == "target":
        _search_by_target(raw["space"], TARGET_RANGE)
    return raw


def _search_by_target(space: dict[str, Any], target_range: dict[str, list[float]]) -> None:
    """``penalty.target`` searched over ``target_range``, ``penalty.lambda`` fixed at 1."""
    space["penalty.target"] = dict(target_range)
    space["penalty.lambda"] = [1.0]


def run_arm(arm: str, seed: int, budget: str, folder: Path) -> dict[str, Any]:
    """One search to the end of its budget; every ended trial with its end time."""
    from archsearch import api
    from archsearch.space import spec_from_dict

    spec = spec_from_dict(arm_space(arm, seed, budget), source=str(SPACE_FILE))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    outcome = api.run(spec, tracking_uri=uri, storage=str(folder / "ray"), on_progress=print)
    return {
        "arm": arm,
        "seed": seed,
        "budget": budget,
        "label": ARMS[arm]["label"],
        "finished": outcome.finished,
        "stopped": outcome.stopped,
        "failed": outcome.failed,
        "trials": trial_records(spec.name, uri),
    }


def trial_records(name: str, uri: str) -> list[dict[str, Any]]:
    """Each finished trial of the search: when it ended (seconds after the parent started)
    and what it got."""
    from archsearch.tracking.rows import rows_of_search
    from archsearch.tracking.store import open_search

    search = open_search(name, uri)
    start = search.parent.info.start_time
    rows = rows_of_search(search)
    ended = {
        row["run_id"]: (search.client.get_run(row["run_id"]).info.end_time - start) / 1000
        for row in rows
    }
    keys = ("gate", "granularity", "val_accuracy", "test_accuracy", "flops_ratio")
    return [{"ended_s": ended[row["run_id"]], **{k: row[k] for k in keys}} for row in rows]


def endings_by(name: str, uri: str, seconds: float) -> dict[str, int]:
    """How many trials of a search had ended each way by ``seconds`` after its parent run
    started (``tracking.endings``; "finished" counts the infeasible too, as a search's outcome
    does)."""
    from archsearch.tracking.endings import FAILED, FINISHED, INFEASIBLE, STOPPED, ending_of_run
    from archsearch.tracking.store import child_runs, open_search

    search = open_search(name, uri)
    start = search.parent.info.start_time
    counts = {FINISHED: 0, STOPPED: 0, FAILED: 0}
    for run in child_runs(search.client, search.experiment_id, search.parent.info.run_id):
        ending = ending_of_run(run)
        if ending is not None and (run.info.end_time - start) / 1000 <= seconds:
            counts[FINISHED if ending == INFEASIBLE else ending] += 1
    return counts


def cut_arm(quality: dict[str, Any], store: Path, minutes: float) -> dict[str, Any]:
    """Arm S from the first ``minutes`` of a longer search of the same file (a
    ``front_quality.py run`` record and a copy of its store): what a search with that budget
    would have computed, since the budget only stops it, and one long run gives both
    figures."""
    seconds = 60 * minutes
    counts = endings_by(
        f"quality-{quality['space']}-{quality['seed']}", f"sqlite:///{store}", seconds
    )
    return {
        "arm": "S",
        "seed": quality["seed"],
        "budget": f"{minutes:g}m",
        "label": ARMS["S"]["label"],
        **{key: counts[key] for key in ("finished", "stopped", "failed")},
        "trials": [t for t in quality["trials"] if t["ended_s"] <= seconds],
    }


def _test_front(trials: list[dict[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """The validation front of the trials ended by ``seconds``, each at its test accuracy."""
    from archsearch.pareto import non_dominated

    done = [t for t in trials if t["ended_s"] <= seconds]
    if not done:
        return []
    points = [[t["val_accuracy"], t["flops_ratio"]] for t in done]
    flags = non_dominated(points, ["max", "min"])
    return [
        {"val_accuracy": t["test_accuracy"], "flops_ratio": t["flops_ratio"]}
        for t, on in zip(done, flags, strict=True)
        if on
    ]


def hypervolume_at(trials: list[dict[str, Any]], seconds: float) -> float:
    """The yardstick of the validation front of the trials ended by ``seconds``, at their
    test accuracy."""
    from archsearch.hypervolume import front_hypervolume

    front = _test_front(trials, seconds)
    return front_hypervolume(front, {"val_accuracy": "max", "flops": "min"}) if front else 0.0


#: the yardstick's cost axis (log10 of the FLOPs ratio) in half-decades, cheapest first
SLICES = tuple((-3 + k / 2, -2.5 + k / 2) for k in range(6))


def hypervolume_by_slice(trials: list[dict[str, Any]], seconds: float) -> list[float]:
    """``hypervolume_at`` cut along the cost axis into ``SLICES``: each half-decade's part of
    the box that the front dominates (the parts add up to the whole). It shows where on the
    axis one front beats another: a search that lacks only the cheapest trials loses in the
    first slice alone."""
    from archsearch.hypervolume import LOG10_COST_RANGE, box_point, dominated_volume

    boxed = [box_point(r["val_accuracy"], r["flops_ratio"]) for r in _test_front(trials, seconds)]
    low, high = LOG10_COST_RANGE
    parts = []
    for start, end in SLICES:
        a, b = (start - low) / (high - low), (end - low) / (high - low)
        # a point left of the slab dominates it from its left edge; the slab's right edge is
        # the reference, so points right of it add nothing
        parts.append(dominated_volume([(acc, max(cost, a)) for acc, cost in boxed], (1.0, b)))
    return parts


def minutes_to_reach(trials: list[dict[str, Any]], volume: float) -> float | None:
    """The first moment (minutes after the start) the arm's front reached ``volume``: the
    yardstick only changes when a trial ends, so the ends are the moments to look at."""
    for seconds in sorted(t["ended_s"] for t in trials):
        if hypervolume_at(trials, seconds) >= volume:
            return seconds / 60
    return None


def best_at(trials: list[dict[str, Any]], level: float) -> float | None:
    """Test accuracy of the trial with the best validation accuracy at or under ``level``."""
    fits = [t for t in trials if t["flops_ratio"] <= level]
    return max(fits, key=lambda t: t["val_accuracy"])["test_accuracy"] if fits else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table(results: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> list[str]:
    """The two markdown tables: hypervolume over time, accuracy at each FLOPs level."""
    minutes = " | ".join(f"HV @ {m} min" for m in CHECKPOINTS_MIN)
    lines = [
        f"| arm | seed | finished | stopped | feasible | {minutes} | versus | min to its HV |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(CHECKPOINTS_MIN) + "---|---:|",
    ]
    final = {
        (r["arm"], r["seed"]): hypervolume_at(r["trials"], 60 * CHECKPOINTS_MIN[-1])
        for r in results
    }
    for r in results:
        volumes = " | ".join(f"{hypervolume_at(r['trials'], 60 * m):.3f}" for m in CHECKPOINTS_MIN)
        versus = ARMS.get(r["arm"], {}).get("versus", "A")
        goal = final.get((versus, r["seed"]))
        reached = None if goal is None else minutes_to_reach(r["trials"], goal)
        lines.append(
            f"| {r['arm']}: {r['label']} | {r['seed']} | {r['finished']} | {r['stopped']} "
            f"| {len(r['trials'])} | {volumes} | {versus} "
            f"| {'-' if reached is None else f'{reached:.1f}'} |"
        )
    levels = " | ".join(f"<= {100 * level:g}%" for level in FLOPS_LEVELS)
    lines += ["", f"| front (test acc %) | seed | {levels} |", "|---|---:|" + "---:|" * 5]
    for r in results:
        structured = [t for t in r["trials"] if t["granularity"] == "neuron"]
        for what, trials in ((f"{r['arm']} all", r["trials"]), (f"{r['arm']} neuron", structured)):
            cells = " | ".join(_percent(best_at(trials, level)) for level in FLOPS_LEVELS)
            lines.append(f"| {what} | {r['seed']} | {cells} |")
    for b in baselines:
        cells = " | ".join(_percent(best_at(b["rows"], level)) for level in FLOPS_LEVELS)
        lines.append(f"| {b['label']} | - | {cells} |")
    return lines


def slice_table(results: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """Per seed both arms hold: each front's ``hypervolume_by_slice`` and the difference."""
    edges = [[f"{float(f'{10 ** (2 + end):.2g}'):g}" for end in pair] for pair in SLICES]
    heads = " | ".join(f"{a}-{b}%" for a, b in edges)
    lines = [f"| front | seed | {heads} | whole |", "|---|---:|" + "---:|" * (len(SLICES) + 1)]
    last = {(r["arm"], r["seed"]): r for r in results}  # a seed's last record of each arm
    for arm, seed in sorted(k for k in last if k[0] == args.arm):
        if (args.versus, seed) not in last:
            continue
        ours = hypervolume_by_slice(last[arm, seed]["trials"], 60 * args.minutes)
        theirs = hypervolume_by_slice(last[args.versus, seed]["trials"], 60 * args.versus_minutes)
        rows = (
            (f"{arm} @ {args.minutes:g} min", ours, "{:.3f}"),
            (f"{args.versus} @ {args.versus_minutes:g} min", theirs, "{:.3f}"),
            ("difference", [o - t for o, t in zip(ours, theirs, strict=True)], "{:+.3f}"),
        )
        for name, parts, form in rows:
            cells = " | ".join(form.format(p) for p in [*parts, sum(parts)])
            lines.append(f"| {name} | {seed} | {cells} |")
    return lines


def repeat_table(results: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    """The half-time target judged on repeated runs: a seed's single run of either arm moves
    by minutes (two trials at once end in an order timing decides), so every run of the arm is
    set against every run of the FIFO arm, and the verdict is taken on the medians."""
    from statistics import median

    end, half = 60 * args.minutes, args.minutes / 2
    lines = [
        f"| seed | {'/'.join(args.versus)}: HV @ {args.minutes:g} min | median "
        f"| {'/'.join(args.arm)}: minutes to each | pairs <= {half:g} min "
        f"| minutes to the median | met |",
        "|---:|---|---:|---|---:|---:|---|",
    ]
    for seed in sorted({r["seed"] for r in results}):
        ours = [r for r in results if r["seed"] == seed and r["arm"] in args.arm]
        theirs = [r for r in results if r["seed"] == seed and r["arm"] in args.versus]
        if not ours or not theirs:
            continue
        goals = [hypervolume_at(r["trials"], end) for r in theirs]
        goal = median(goals)
        reach = [[minutes_to_reach(r["trials"], g) for g in goals] for r in ours]
        pairs = [m for row in reach for m in row]
        met = sum(m is not None and m <= half for m in pairs)
        to_median = [minutes_to_reach(r["trials"], goal) for r in ours]
        # a run that never reaches it counts as slower than any that does
        typical = median(float("inf") if m is None else m for m in to_median)
        cells = "; ".join(
            ", ".join("never" if m is None else f"{m:.1f}" for m in row) for row in reach
        )
        lines.append(
            f"| {seed} | {', '.join(f'{g:.3f}' for g in goals)} | {goal:.3f} | {cells} "
            f"| {met} of {len(pairs)} | {typical:.1f} | {'yes' if typical <= half else 'no'} |"
        )
    return lines


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Hypervolume against time, one line per arm and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for r in results:
        end = max((t["ended_s"] for t in r["trials"]), default=60.0)
        times = [end * i / 100 for i in range(101)]
        axes.plot(
            [t / 60 for t in times],
            [hypervolume_at(r["trials"], t) for t in times],
            label=f"{r['arm']} seed {r['seed']}",
            linestyle="-" if r["seed"] == 0 else "--",
        )
    axes.set_xlabel("minutes since the search started")
    axes.set_ylabel("hypervolume (test accuracy)")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the arms, one after the other")
    run.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=sorted(ARMS))
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    run.add_argument("--budget", default="12m")
    run.add_argument("--out", type=Path, required=True, help="JSON file, appended to")
    run.add_argument(
        "--keep-stores",
        type=Path,
        help="keep each search's MLflow store in DIR/<arm>-<seed> (for rung_rules.py read)",
    )
    cut = commands.add_parser(
        "cut", help="arm S from the first minutes of a front_quality.py search and its store"
    )
    cut.add_argument("quality", type=Path, help="front_quality.py run's JSON")
    cut.add_argument("--seed", type=int, required=True, help="its last record of this seed")
    cut.add_argument("--store", type=Path, required=True, help="a copy of that search's store")
    cut.add_argument("--minutes", type=float, default=12)
    cut.add_argument("--out", type=Path, required=True, help="JSON file, appended to")
    slices = commands.add_parser(
        "slices", help="where on the cost axis one arm's front trails another's, per seed"
    )
    slices.add_argument("results", type=Path)
    slices.add_argument("--arm", required=True)
    slices.add_argument("--minutes", type=float, default=6, help="the arm's front at this time")
    slices.add_argument("--versus", required=True)
    slices.add_argument("--versus-minutes", type=float, default=12)
    repeats = commands.add_parser(
        "repeats", help="the half-time target on repeated runs of an arm and its FIFO arm"
    )
    repeats.add_argument("results", type=Path)
    repeats.add_argument("--arm", nargs="+", required=True, help="the records of one arm's runs")
    repeats.add_argument("--versus", nargs="+", required=True, help="the FIFO arm's runs")
    repeats.add_argument("--minutes", type=float, default=12, help="the FIFO arm's budget")
    show = commands.add_parser("table", help="the tables (and plot) from a run's JSON")
    show.add_argument("results", type=Path)
    show.add_argument("--baselines", type=Path, help="magnitude_baseline.py --json output")
    show.add_argument("--plot", type=Path)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.command == "run":
        results = json.loads(args.out.read_text()) if args.out.exists() else []
        for seed in args.seeds:
            for arm in args.arms:
                if args.keep_stores:
                    folder = args.keep_stores / f"{arm}-{seed}"
                    folder.mkdir(parents=True, exist_ok=False)  # never a search on a used store
                    results.append(run_arm(arm, seed, args.budget, folder))
                else:
                    with tempfile.TemporaryDirectory(prefix=f"efficiency-{arm}-{seed}-") as tmp:
                        results.append(run_arm(arm, seed, args.budget, Path(tmp)))
                args.out.write_text(json.dumps(results, indent=1) + "\n")  # after every arm
        return
    if args.command == "cut":
        quality = [r for r in json.loads(args.quality.read_text()) if r["seed"] == args.seed]
        results = json.loads(args.out.read_text()) if args.out.exists() else []
        results.append(cut_arm(quality[-1], args.store, args.minutes))
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        return
    results = json.loads(args.results.read_text())
    if args.command == "slices":
        print("\n".join(slice_table(results, args)))
        return
    if args.command == "repeats":
        print("\n".join(repeat_table(results, args)))
        return
    baselines = json.loads(args.baselines.read_text()) if args.baselines else []
    print("\n".join(table(results, baselines)))
    if args.plot:
        plot(results, args.plot)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
