"""Front quality: what a search of a bundled space ships, against dense and magnitude pruning.

Usage:
  python benchmarks/front_quality.py run --space lenet300_fashion --seeds 0 1 --budget 30m \
      --out benchmarks/front_quality.json
  python benchmarks/magnitude_baseline.py --ratios 0.01 0.02 0.05 0.1 0.25 \
      --json benchmarks/magnitude_levels.json                      # and again with --structured
  python benchmarks/front_quality.py table benchmarks/front_quality.json \
      --baselines benchmarks/magnitude_levels.json

Each run is a real search of ``search_spaces/<space>.yaml`` as shipped (its own seed, ended by
the time budget; issue 15 asks 30 minutes for lenet300_fashion and 90 for lenet5_fashion on 2
cores), with its dense reference trained once beside the trials. The table gives, per FLOPs
level (1, 2, 5, 10, 25%), the test accuracy of the trial with the best validation accuracy at
or under it, over the whole search and over its structured (neuron, channel) trials, beside the
dense reference and the baselines, and the yardstick hypervolume (points chosen on validation
accuracy, plotted at test accuracy; ``search_efficiency.hypervolume_at``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

from search_efficiency import FLOPS_LEVELS, REPO, best_at, hypervolume_at, trial_records

STRUCTURED = ("neuron", "channel", "channel+neuron")


def run_space(space: str, seed: int, budget: str, folder: Path) -> dict[str, Any]:
    """One search of a bundled space to the end of its budget, with its reference."""
    import dataclasses

    from archsearch import api
    from archsearch.durations import parse_duration
    from archsearch.space import load_spec

    spec = load_spec(REPO / "search_spaces" / f"{space}.yaml")
    spec = dataclasses.replace(
        spec,
        name=f"quality-{space}-{seed}",
        seed=seed,
        trials=10_000,
        time_budget=parse_duration(budget),
    )
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    outcome = api.run(spec, tracking_uri=uri, storage=str(folder / "ray"), on_progress=print)
    return {
        "space": space,
        "seed": seed,
        "budget": budget,
        "finished": outcome.finished,
        "reference": api.reference(spec.name, uri),
        "trials": trial_records(spec.name, uri),
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table(results: list[dict[str, Any]], baselines: list[dict[str, Any]]) -> list[str]:
    """Test accuracy (%) at each FLOPs level, per search and for the baselines."""
    levels = " | ".join(f"<= {100 * level:g}%" for level in FLOPS_LEVELS)
    lines = [
        f"| search | seed | trials | HV (test) | dense test | {levels} |",
        "|---|---:|---:|---:|---:|" + "---:|" * len(FLOPS_LEVELS),
    ]
    for r in results:
        dense = (r.get("reference") or {}).get("test_accuracy")
        structured = [t for t in r["trials"] if t["granularity"] in STRUCTURED]
        rows = [("whole front", r["trials"]), ("structured", structured)]
        kinds = [g for g in STRUCTURED if any(t["granularity"] == g for t in structured)]
        if len(kinds) > 1:  # a CNN space: each structured granularity on its own as well
            rows += [(kind, [t for t in structured if t["granularity"] == kind]) for kind in kinds]
        for what, trials in rows:
            cells = " | ".join(_cell(best_at(trials, level)) for level in FLOPS_LEVELS)
            volume = hypervolume_at(trials, float("inf"))
            lines.append(
                f"| {r['space']} {what} | {r['seed']} | {len(trials)} | {volume:.3f} "
                f"| {_cell(dense)} | {cells} |"
            )
    for b in baselines:
        cells = " | ".join(_cell(best_at(b["rows"], level)) for level in FLOPS_LEVELS)
        lines.append(f"| {b['label']} | - | - | - | - | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="search the space once per seed, one at a time")
    run.add_argument("--space", default="lenet300_fashion")
    run.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    run.add_argument("--budget", default="30m")
    run.add_argument("--out", type=Path, required=True, help="JSON file, appended to")
    show = commands.add_parser("table", help="the table from a run's JSON")
    show.add_argument("results", type=Path)
    show.add_argument("--baselines", type=Path, help="magnitude_baseline.py --json output")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.command == "run":
        results = json.loads(args.out.read_text()) if args.out.exists() else []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory(prefix=f"quality-{args.space}-{seed}-") as tmp:
                results.append(run_space(args.space, seed, args.budget, Path(tmp)))
            args.out.write_text(json.dumps(results, indent=1) + "\n")
        return
    results = json.loads(args.results.read_text())
    baselines = json.loads(args.baselines.read_text()) if args.baselines else []
    print("\n".join(table(results, baselines)))


if __name__ == "__main__":
    main()
