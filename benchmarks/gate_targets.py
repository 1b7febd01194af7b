"""Does every gate end at the cost it is asked for? gate x granularity x target on Fashion-MNIST.

Usage: python benchmarks/gate_targets.py --label after [--gates ...] [--granularities ...]
       [--targets 0.02 0.05 0.2] [--lambda 5] [--workers 2] [--baseline] [--init reference]
       [--reference-dir DIR] [--gate-inputs]
Each cell is one `run_trial` with `penalty.target` = T (the default 10 gated + 2 fine-tuning
epochs): LeNet-300-100 for `weight` and `neuron`, LeNet-5-Caffe for `channel`. A cell passes
when its hardened FLOPs ratio lies in [0.8 T, 1.25 T] and its test accuracy is at least the
global magnitude baseline at T (`magnitude_baseline.py`, same epochs) minus 2 points.
`--init reference` starts every cell from the dense network trained once per model on the
same schedule (what a search's `init: {from: reference}` does); the default is a fresh
initialisation. `--gate-inputs` has neuron cells gate LeNet-300-100's 784 input features too
(what the bundled `lenet300_fashion.yaml` does in every neuron trial). Cells run in
`--workers` processes of one thread each. Results accumulate in benchmarks/gate_targets.json
under `--label` (so "before" and "after" sit side by side) and print as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from archsearch.gates import list_gates

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODEL_OF = {"weight": "lenet_300_100", "neuron": "lenet_300_100", "channel": "lenet5_caffe"}
BAND = (0.8, 1.25)
TOLERANCE = 0.02  # accuracy points below the magnitude baseline that still count as no collapse
OUT = Path(__file__).resolve().parent / "gate_targets.json"

_DATA: dict[str, Any] = {}


def _start_worker() -> None:
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)


def _data(model: str) -> Any:
    from archsearch.config import TrialConfig
    from archsearch.trial import load_data

    if model not in _DATA:
        _DATA[model] = load_data(TrialConfig(model=model, data="fashion_mnist"))
    return _DATA[model]


def run_cell(cell: dict[str, Any]) -> dict[str, Any]:
    """One trial; the expected and hardened cost at the end of gated training come from its
    history, the rest from its metrics."""
    from archsearch.config import TrialConfig
    from archsearch.trial import run_trial

    model = MODEL_OF[cell["granularity"]]
    config = TrialConfig(
        model=model,
        data="fashion_mnist",
        gate=cell["gate"],
        granularity=cell["granularity"],
        penalty_lambda=cell["lambda"],
        penalty_target=cell["target"],
        epochs=cell["epochs"],
        finetune_epochs=cell["finetune_epochs"],
        init_weights=cell.get("init_weights"),
        gate_inputs=cell.get("gate_inputs", False),
    )
    started = time.perf_counter()
    try:
        result = run_trial(config, data=_data(model))
    except Exception as error:  # a crashing cell is a result too
        return {**cell, "error": f"{type(error).__name__}: {error}"}
    last_gated = [h for h in result.history if h["phase"] == "gated"][-1]
    m = result.metrics
    return {
        **cell,
        "model": model,
        "flops_ratio": m["flops_ratio"],
        "expected_cost_ratio": last_gated["expected_cost_ratio"],
        "hard_cost_ratio": last_gated["hard_cost_ratio"],
        "gated_val_accuracy": last_gated["val_accuracy"],
        "test_accuracy": m["test_accuracy"],
        "architecture": result.subnetwork["architecture"],
        "seconds": time.perf_counter() - started,
    }


def _reference_weights(model: str, epochs: int, finetune: int, folder: Path) -> str:
    """The dense network a search's reference trains (same seed, ``epochs + finetune``
    epochs, no gates), saved where the cells' ``init_weights`` read it: what
    ``init: {from: reference}`` hands every trial. One already in ``folder`` (a
    ``--reference-dir`` of an earlier run with the same schedule) is used as it is."""
    from safetensors.torch import save_file

    from archsearch.config import TrialConfig
    from archsearch.trial import dense_reference

    path = folder / f"{model}-{epochs}+{finetune}.safetensors"
    if path.exists():
        print(f"reference {model}: {path}", flush=True)
        return str(path)
    _start_worker()
    config = TrialConfig(model=model, data="fashion_mnist", epochs=epochs, finetune_epochs=finetune)
    reference = dense_reference(config, data=_data(model))
    save_file(reference.weights, str(path))
    print(f"reference {model}: test {reference.metrics['test_accuracy']:.4f}", flush=True)
    return str(path)


def start_from_reference(
    pool: Executor,
    cells: list[dict[str, Any]],
    epochs: int,
    finetune: int,
    folder: Path | None = None,
) -> None:
    """Train each cell's model's dense reference once in ``pool`` (or take it from
    ``folder``) and point every cell at it."""
    folder = folder or Path(tempfile.mkdtemp(prefix="reference_"))
    folder.mkdir(parents=True, exist_ok=True)
    models = {MODEL_OF[cell["granularity"]] for cell in cells}
    weights = {m: pool.submit(_reference_weights, m, epochs, finetune, folder) for m in models}
    for cell in cells:
        cell["init"] = "reference"
        cell["init_weights"] = weights[MODEL_OF[cell["granularity"]]].result()


def _baseline(models: set[str], targets: list[float], epochs: int, finetune: int) -> dict:
    from magnitude_baseline import magnitude_rows

    _start_worker()
    return {
        model: {
            f"{row['ratio']:g}": row
            for row in magnitude_rows(model, targets, epochs=epochs, finetune_epochs=finetune)
        }
        for model in sorted(models)
    }


def _verdict(row: dict[str, Any], baselines: dict) -> tuple[str, str]:
    if "error" in row:
        return "error", "error"
    low, high = BAND
    in_band = low * row["target"] <= row["flops_ratio"] <= high * row["target"]
    base = baselines.get(row["model"], {}).get(f"{row['target']:g}")
    if base is None:
        return ("yes" if in_band else "no"), "?"
    fine = row["test_accuracy"] >= base["test_accuracy"] - TOLERANCE
    return ("yes" if in_band else "no"), ("yes" if fine else "no")


def table(rows: list[dict[str, Any]], baselines: dict) -> str:
    lines = [
        "| gate | granularity | target | hardened FLOPs % | expected / hard at end of gated "
        "| test acc | magnitude acc | in band | no collapse | s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in sorted(rows, key=lambda r: (r["gate"], r["granularity"], r["target"])):
        band, fine = _verdict(row, baselines)
        if "error" in row:
            lines.append(
                f"| {row['gate']} | {row['granularity']} | {row['target']:g} | "
                f"error: {row['error'][:60]} | | | | | | |"
            )
            continue
        base = baselines.get(row["model"], {}).get(f"{row['target']:g}")
        base_acc = f"{base['test_accuracy']:.4f}" if base else "?"
        lines.append(
            f"| {row['gate']} | {row['granularity']} | {row['target']:g} "
            f"| {100 * row['flops_ratio']:.2f} "
            f"| {row['expected_cost_ratio']:.3f} / {row['hard_cost_ratio']:.3f} "
            f"| {row['test_accuracy']:.4f} | {base_acc} | {band} | {fine} | {row['seconds']:.0f} |"
        )
    counts = [_verdict(r, baselines) for r in rows]
    lines.append("")
    lines.append(
        f"{sum(b == 'yes' for b, _ in counts)} of {len(rows)} cells in band, "
        f"{sum(b == 'yes' and f == 'yes' for b, f in counts)} in band and no collapse."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--label", required=True, help="key of this run in the JSON file")
    parser.add_argument("--gates", nargs="+", default=list_gates())
    parser.add_argument("--granularities", nargs="+", default=["weight", "neuron", "channel"])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.02, 0.05, 0.2])
    parser.add_argument("--lambda", dest="penalty_lambda", type=float, default=5.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument(
        "--baseline", action="store_true", help="measure magnitude pruning for models without it"
    )
    parser.add_argument(
        "--skip-done", action="store_true", help="run only cells this label does not hold yet"
    )
    parser.add_argument(
        "--report", action="store_true", help="print the label's table from the JSON, run nothing"
    )
    parser.add_argument(
        "--init",
        choices=["scratch", "reference"],
        default="scratch",
        help="reference: every cell starts from the dense network trained once per model",
    )
    parser.add_argument(
        "--gate-inputs", action="store_true", help="neuron cells also gate the input features"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--reference-dir",
        type=Path,
        help="with --init reference: keep the dense references here and reuse them next time",
    )
    args = parser.parse_args()
    stored = json.loads(args.out.read_text()) if args.out.exists() else {}
    cells = [
        {
            "gate": gate,
            "granularity": granularity,
            "target": target,
            "lambda": args.penalty_lambda,
            "epochs": args.epochs,
            "finetune_epochs": args.finetune_epochs,
            **({"gate_inputs": True} if args.gate_inputs and granularity == "neuron" else {}),
        }
        for granularity in args.granularities
        for gate in args.gates
        for target in args.targets
    ]
    runs = stored.setdefault("runs", {})
    rows = {f"{r['gate']}:{r['granularity']}:{r['target']:g}": r for r in runs.get(args.label, [])}
    if args.report:
        print(table(list(rows.values()), stored.get("baselines", {})))
        return
    if args.skip_done:
        cells = [c for c in cells if f"{c['gate']}:{c['granularity']}:{c['target']:g}" not in rows]
    context = get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context, initializer=_start_worker) as pool:
        if args.init == "reference":
            start_from_reference(pool, cells, args.epochs, args.finetune_epochs, args.reference_dir)
        baseline_job = None
        if args.baseline:
            known = stored.get("baselines", {})
            models = {MODEL_OF[g] for g in args.granularities} - set(known)
            baseline_job = pool.submit(
                _baseline, models, args.targets, args.epochs, args.finetune_epochs
            )
        jobs = [pool.submit(run_cell, cell) for cell in cells]
        for job in as_completed([*jobs, *([baseline_job] if baseline_job else [])]):
            if job is baseline_job:
                stored.setdefault("baselines", {}).update(job.result())
            else:
                row = job.result()
                rows[f"{row['gate']}:{row['granularity']}:{row['target']:g}"] = row
                runs[args.label] = list(rows.values())
                print(json.dumps(row), flush=True)
            args.out.write_text(json.dumps(stored, indent=1))
    print(table(list(rows.values()), stored.get("baselines", {})))


if __name__ == "__main__":
    main()
