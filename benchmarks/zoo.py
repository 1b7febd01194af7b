"""Every torchvision classifier through one pruning trial and one verified export (issue 16).

Usage:
    OMP_NUM_THREADS=1 python benchmarks/zoo.py --results /tmp/zoo.jsonl [--only NAMES]
        [--granularities channel,channel+neuron] [--max-seconds 300]
        [--epochs N] [--gate-lr X] [--lambda L]     # override the training settings below
    python benchmarks/zoo.py --table /tmp/zoo.jsonl     # the markdown table of a results file

Each (model, granularity) runs in its own subprocess with a wall-clock limit: ``run_trial``
on synthetic data (a few samples, 10 classes) at the smallest input size the family accepts,
with a cost target that forces removals (``SETTINGS``), at ``channel`` and ``channel+neuron``
and, for the transformer families, ``neuron`` (their MLP blocks), then ``export_subnetwork``
as ONNX, or the first other format that
writes and verifies when ONNX cannot express a layer. The export rebuilds the network from
``subnetwork.json`` + ``weights.safetensors`` and checks it on random batches, so a pass
means: trained, hardened, counted, rebuilt and exported, verified. An ``ArchSearchError``
(exit 2 on the command line) is a refusal, with its one line; anything else is a failure,
with its exception line and where it was raised. Each result is appended to the results file
as it ends, so a run cut short still records what ran. Models run smallest first (torchvision's
parameter counts), so a time-limited run covers the most models.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

#: smallest square input each family accepts in an eval forward (probed over 32, 48, 64, 75,
#: 96, 128, ..., 224): AlexNet's pooling needs 63+, Inception v3's stem 75+, MaxViT a fixed
#: 224 (its 7x7 partitions), ViT a side that is a multiple of its patch (archsearch builds it
#: at the data's size: 28 for the 14-pixel patches of vit_h_14); every other family runs at 32
SIZES = {"alexnet": 64, "inception_v3": 75, "maxvit_t": 224, "vit_h_14": 28}
DEFAULT_SIZE = 32
GRANULARITIES = ("channel", "channel+neuron")
#: families whose prunable units are their MLP blocks' hidden neurons: run at neuron too
TRANSFORMERS = ("vit_", "swin_", "maxvit_")
EXPORT_ORDER = ("onnx", "pt2", "torchscript", "safetensors")
#: 2 epochs of 32 samples (less a validation share) at batch 8 are 8 gated steps; in those,
#: gate lr 0.5 left mnasnet, efficientnet and resnet50 at 65-73% of dense FLOPs, 0.75 took
#: every family tried to 40-50% (1.0 to ~30%, the target; lambda 60 instead of 20 barely
#: moved them: Adam's steps do not grow with the gradient)
SETTINGS = {
    "gate": "hard_concrete",
    "penalty_target": 0.3,
    "penalty_lambda": 20.0,
    "gate_lr": 0.75,
    "epochs": 2,
    "finetune_epochs": 1,
    "batch_size": 8,
    "device": "cpu",
    "latency_runtime": "off",  # the zoo reports FLOPs; timing would only cost minutes
}
#: gated epochs for the families whose residual branches start with no say in the output:
#: ConvNeXt scales each block by 1e-6 and ViT's head starts at zero, so for their first few
#: dozen steps the loss gives the gates no signal, the penalty alone moves them and, under
#: Adam, all by the same step: the hard cost swings between 4% and 100% (8 steps ended at
#: 100% on convnext_small, vit_b_16). With 120 steps the loss parts them and the hard cost
#: settles at the target (convnext_small 31%, vit_b_16's MLPs 30%, RESULTS.md)
FAMILY_EPOCHS = {"convnext_": 30, "vit_": 30}
#: the command-line overrides of SETTINGS: flag -> (field, type)
OVERRIDES = {"--epochs": ("epochs", int), "--gate-lr": ("gate_lr", float)}
OVERRIDES["--lambda"] = ("penalty_lambda", float)
N_SAMPLES, NUM_CLASSES = 32, 10


def input_size(name: str) -> int:
    return next((size for prefix, size in SIZES.items() if name.startswith(prefix)), DEFAULT_SIZE)


def zoo_epochs(name: str) -> int:
    return next((n for p, n in FAMILY_EPOCHS.items() if name.startswith(p)), SETTINGS["epochs"])


def zoo_granularities(name: str) -> tuple[str, ...]:
    """``channel`` and ``channel+neuron`` for every model, and ``neuron`` for transformers."""
    return GRANULARITIES + (("neuron",) if name.startswith(TRANSFORMERS) else ())


def zoo_names() -> list[str]:
    """torchvision's classifiers, fewest parameters first (from its weights' metadata: no
    download, no model built)."""
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)

    def params(name: str) -> int:
        return torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]

    return sorted(names, key=lambda n: (params(n), n))


# -- one run (in the child process) --------------------------------------------------------


def run_one(name: str, granularity: str, work: Path) -> dict[str, Any]:
    """Train, harden and export one model; never raises."""
    from archsearch.config import TrialConfig
    from archsearch.errors import ArchSearchError, first_line

    size = input_size(name)
    record: dict[str, Any] = {"model": name, "granularity": granularity, "size": size}
    started = time.perf_counter()
    try:
        config = TrialConfig(
            model=f"torchvision/{name}",
            data="synthetic",
            data_options={
                "input_shape": [3, size, size],
                "num_classes": NUM_CLASSES,
                "n_samples": N_SAMPLES,
            },
            granularity=granularity,
            **{**SETTINGS, "epochs": zoo_epochs(name)},
        )
        record.update(_train_and_export(config, work))
        record["status"] = "pass"
    except ArchSearchError as error:
        record.update(status="refused", reason=first_line(error))
    except Exception as error:  # the point of the zoo: report it, in one line
        record.update(status="failed", reason=_failure_line(error))
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def _train_and_export(config: Any, work: Path) -> dict[str, Any]:
    from archsearch.export import ExportError, export_subnetwork
    from archsearch.trial import run_trial

    result = run_trial(config, out_dir=work / "trial")
    metrics = result.metrics
    figures = {
        "dense_flops": metrics["dense_flops"],
        "flops": metrics["flops"],
        "degenerate": metrics["degenerate"],
        # the hard cost after each gated epoch: where gates move in lockstep it swings
        "hard_cost_by_epoch": [
            round(e["hard_cost_ratio"], 3) for e in result.history if "hard_cost_ratio" in e
        ],
    }
    refusals = []
    for fmt in EXPORT_ORDER:
        try:
            export_subnetwork(str(work / "trial"), fmt, work / f"model.{fmt}")
        except ExportError as error:
            refusals.append(f"{fmt}: {error}")
            continue
        return {**figures, "format": fmt, "export_refusals": refusals}
    raise ExportError("no format exports this subnetwork: " + " | ".join(refusals))


def _failure_line(error: BaseException) -> str:
    """``Type: first line (file:line)``, the frame the innermost archsearch call raised in."""
    from archsearch.errors import first_line

    frames = traceback.extract_tb(error.__traceback__)
    ours = [f for f in frames if "/archsearch/" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(error).__name__}: {first_line(error)[:200]} ({where} {ours[-1].name})"


# -- the driver ----------------------------------------------------------------------------


def run_in_subprocess(
    name: str, granularity: str, max_seconds: float, overrides: list[str] = ()
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", name, "--granularities", granularity]
    command += list(overrides)
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=max_seconds)
    except subprocess.TimeoutExpired:
        return {
            "model": name,
            "granularity": granularity,
            "size": input_size(name),
            "status": "timeout",
            "reason": f"not finished in {max_seconds:g} s",
            "seconds": round(time.perf_counter() - started, 1),
        }
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return {
        "model": name,
        "granularity": granularity,
        "size": input_size(name),
        "status": "failed",
        "reason": f"process exited {done.returncode}: {tail[:200]}",
        "seconds": round(time.perf_counter() - started, 1),
    }


def drive(args: argparse.Namespace) -> None:
    names = args.only.split(",") if args.only else [] if args.too_large else zoo_names()
    overrides = _override_flags(args)
    results = Path(args.results)
    for name in args.too_large.split(",") if args.too_large else []:
        for granularity in zoo_granularities(name):
            _append(results, _too_large(name, granularity))
    for name in names:
        asked = args.granularities.split(",") if args.granularities else zoo_granularities(name)
        for granularity in asked:
            _append(results, run_in_subprocess(name, granularity, args.max_seconds, overrides))


def _append(results: Path, record: dict[str, Any]) -> None:
    with results.open("a") as out:
        out.write(json.dumps(record) + "\n")
    print(_row(record), flush=True)


def _too_large(name: str, granularity: str) -> dict[str, Any]:
    """A model recorded as not run, with its size, after a timed step showed it would not
    finish in the time a zoo run has."""
    import torchvision

    params = torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    return {
        "model": name,
        "granularity": granularity,
        "size": input_size(name),
        "status": "not run",
        "reason": f"too large for this machine ({params:,} params)",
        "seconds": 0,
    }


def _override_flags(args: argparse.Namespace) -> list[str]:
    """The overrides given to the driver, as flags for each child."""
    flags = []
    for flag in OVERRIDES:
        value = getattr(args, flag[2:].replace("-", "_"))
        flags += [] if value is None else [flag, str(value)]
    return flags


# -- the table -----------------------------------------------------------------------------


def _flops(value: Any) -> str:
    return f"{value / 1e6:,.1f}M" if isinstance(value, (int, float)) else ""


def _row(record: dict[str, Any]) -> str:
    dense, hard = record.get("dense_flops"), record.get("flops")
    ratio = f"{hard / dense:.0%}" if dense and hard is not None else ""
    status = record["status"]
    detail = record.get("reason", "")
    if status == "pass":
        detail = f"exported as {record['format']}, verified"
        if record.get("export_refusals"):
            detail += f" (onnx refused: {record['export_refusals'][0].split('(', 1)[-1][:90]}"
        if record.get("degenerate"):
            detail += "; degenerate: a whole group was removed"
    detail = detail.replace("|", "\\|")
    return (
        f"| {record['model']} | {record['granularity']} | {record['size']} | {_flops(dense)} "
        f"| {_flops(hard)} | {ratio} | {status} | {detail} | {record['seconds']} |"
    )


def table(path: Path, every: list[str] | None = None) -> str:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if every:  # the zoo's order (fewest parameters first), whatever order the runs took
        records.sort(key=lambda r: (every.index(r["model"]), _granularity_rank(r)))
    head = [
        "| model | granularity | input | dense FLOPs | hardened FLOPs | ratio | result "
        "| detail | seconds |",
        "|---|---|---:|---:|---:|---:|---|---|---:|",
    ]
    rows = [_row(r) for r in records]
    ran = {(r["model"], r["granularity"]) for r in records}
    for name in every or []:
        for granularity in zoo_granularities(name):
            if (name, granularity) not in ran:
                rows.append(f"| {name} | {granularity} | {input_size(name)} | | | | not run | | |")
    counts: dict[str, int] = {"not run": len(rows) - len(records)}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    summary = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    return "\n".join([*head, *rows, "", f"Totals over {len(rows)} runs: {summary}."])


def _granularity_rank(record: dict[str, Any]) -> int:
    return zoo_granularities(record["model"]).index(record["granularity"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated torchvision names (default: all)")
    parser.add_argument("--granularities", help="default: zoo_granularities of each model")
    for flag, (_, kind) in OVERRIDES.items():
        parser.add_argument(flag, type=kind, help=f"instead of {SETTINGS[OVERRIDES[flag][0]]}")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--results", default="zoo_results.jsonl")
    parser.add_argument("--table", help="print the markdown table of this results file")
    parser.add_argument("--too-large", help="comma-separated names to record as not run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(table(Path(args.table), zoo_names()))
    elif args.child:
        warnings.filterwarnings("ignore")
        for flag, (key, _) in OVERRIDES.items():
            value = getattr(args, flag[2:].replace("-", "_"))
            SETTINGS[key] = SETTINGS[key] if value is None else value
        if args.epochs is not None:  # one number for every family
            FAMILY_EPOCHS.clear()
        with tempfile.TemporaryDirectory(prefix="zoo-") as work:
            print(json.dumps(run_one(args.child, args.granularities, Path(work))), flush=True)
    else:
        drive(args)


if __name__ == "__main__":
    main()
