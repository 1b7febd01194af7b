"""Counted FLOPs against measured latency: how much faster does a pruned network really run?

Usage: OMP_NUM_THREADS=1 python benchmarks/latency_ratios.py [--target 0.1] [--epochs 4]
       [--finetune-epochs 1] [--measurements 5] [--out benchmarks/latency_ratios.json]

For LeNet-300-100 (weight, neuron) and LeNet-5-Caffe (weight, channel, channel+neuron) on
Fashion-MNIST, one `hard_concrete` trial per granularity with `penalty.target` = T, so the
subnetworks land at similar FLOPs and accuracy; then each subnetwork is timed
`--measurements` times against its dense model (onnxruntime, 1 thread, batch 1 and 64, the
trial's own interleaved measurement: `archsearch.latency`), and, at weight granularity,
through torch's CSR sparse kernels. Prints a Markdown table (FLOPs ratio, latency ratio at
batch 1 and 64 as median [min-max] of the measurements, test accuracy, ONNX file size) and
writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from archsearch.config import TrialConfig
from archsearch.latency import LatencySettings, measure_latency, sparse_latency
from archsearch.models import create_model
from archsearch.onnx_graph import EXAMPLE_BATCH, write_onnx
from archsearch.trial import load_data, run_trial

CELLS = (
    ("lenet_300_100", "weight"),
    ("lenet_300_100", "neuron"),
    ("lenet5_caffe", "weight"),
    ("lenet5_caffe", "channel"),
    ("lenet5_caffe", "channel+neuron"),
)
OUT = Path(__file__).resolve().parent / "latency_ratios.json"


def _onnx_size(model: torch.nn.Module, shape: tuple[int, ...]) -> int:
    buffer = io.BytesIO()
    write_onnx(model.cpu().eval(), torch.zeros(EXAMPLE_BATCH, *shape), buffer)
    return len(buffer.getvalue())


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def run_cell(model: str, granularity: str, args: argparse.Namespace) -> dict[str, Any]:
    """One trial, then its subnetwork timed ``args.measurements`` times."""
    config = TrialConfig(
        model=model,
        data="fashion_mnist",
        gate="hard_concrete",
        granularity=granularity,
        penalty_lambda=1.0,
        penalty_target=args.target,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        latency_runtime="off",  # timed below, several times
    )
    data = load_data(config)
    started = time.perf_counter()
    result = run_trial(config, data=data)
    seconds = time.perf_counter() - started
    shape = tuple(data.input_shape)
    dense = create_model(model, shape, data.num_classes).eval()
    settings = LatencySettings(runtime="onnxruntime", batch=64, repeats=7, threads=1)
    single, batched, sparse_single, sparse_batched = [], [], [], []
    for _ in range(args.measurements):
        measured = measure_latency(result.model, dense, shape, settings)
        single.append(measured["latency_ratio"])
        batched.append(measured["latency_ratio_batched"])
        if granularity == "weight":
            sparse = sparse_latency(result.model, dense, shape, settings)
            if sparse:
                sparse_single.append(sparse["sparse_latency_ratio"])
                sparse_batched.append(sparse["sparse_latency_ratio_batched"])
    return {
        "model": model,
        "granularity": granularity,
        "target": args.target,
        "flops_ratio": result.metrics["flops_ratio"],
        "test_accuracy": result.metrics["test_accuracy"],
        "architecture": result.subnetwork["architecture"],
        "latency_ratio": single,
        "latency_ratio_batched": batched,
        "sparse_latency_ratio": sparse_single,
        "sparse_latency_ratio_batched": sparse_batched,
        "dense_latency_ms": measured["dense_latency_ms"],
        "latency_ms": measured["latency_ms"],
        "onnx_bytes": _onnx_size(result.model, shape),
        "dense_onnx_bytes": _onnx_size(dense, shape),
        "runtime": measured["latency_runtime"],
        "train_seconds": seconds,
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | granularity | kept | FLOPs ratio | latency ratio b1 | latency ratio b64 "
        "| sparse kernels b1 / b64 | ONNX size | test acc |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        sparse = "-"
        if row["sparse_latency_ratio"]:
            sparse = " / ".join(
                _spread(row[k]) for k in ("sparse_latency_ratio", "sparse_latency_ratio_batched")
            )
        lines.append(
            f"| {row['model']} | {row['granularity']} | {row['architecture']} "
            f"| {row['flops_ratio']:.3f} | {_spread(row['latency_ratio'])} "
            f"| {_spread(row['latency_ratio_batched'])} | {sparse} "
            f"| {row['onnx_bytes'] / 1e6:.2f} / {row['dense_onnx_bytes'] / 1e6:.2f} MB "
            f"| {row['test_accuracy']:.4f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--measurements", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    rows = []
    for model, granularity in CELLS:
        rows.append(run_cell(model, granularity, args))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
        args.out.write_text(json.dumps(rows, indent=1))
    print(table(rows))
    print(f"runtime: {rows[-1]['runtime']}")


if __name__ == "__main__":
    main()
