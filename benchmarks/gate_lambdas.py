"""Does one lambda mean the same for every gate? No target; gate x granularity x lambda.

Usage: python benchmarks/gate_lambdas.py [--lambdas 0.1 1] [--granularities neuron weight]
       [--workers 2] [--init reference [--reference-dir DIR]] [--out FILE]
Each cell is one `run_trial` on LeNet-300-100 / Fashion-MNIST (10 gated + 2 fine-tuning
epochs) with the plain penalty `lambda * cost ratio`; the table gives the hardened FLOPs % and
test accuracy per gate, one column per lambda. A search samples lambda on a log scale for
every gate alike, so the same lambda should land each gate in the same decade of FLOPs.
`--init reference` starts every cell from the dense network trained once (a search's default,
``init: {from: reference}``); the default is a fresh initialisation, as the first table ran.
Results go to benchmarks/gate_lambdas.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from archsearch.gates import list_gates

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gate_targets import _start_worker, run_cell, start_from_reference

OUT = Path(__file__).resolve().parent / "gate_lambdas.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gates", nargs="+", default=list_gates())
    parser.add_argument("--granularities", nargs="+", default=["neuron", "weight"])
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--init", choices=["scratch", "reference"], default="scratch")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--reference-dir",
        type=Path,
        help="with --init reference: keep the dense references here and reuse them next time",
    )
    args = parser.parse_args()
    cells = [
        {
            "gate": gate,
            "granularity": granularity,
            "target": None,
            "lambda": penalty_lambda,
            "epochs": 10,
            "finetune_epochs": 2,
        }
        for granularity in args.granularities
        for gate in args.gates
        for penalty_lambda in args.lambdas
    ]
    context = get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context, initializer=_start_worker) as pool:
        if args.init == "reference":
            start_from_reference(pool, cells, epochs=10, finetune=2, folder=args.reference_dir)
        rows = list(pool.map(run_cell, cells))
    args.out.write_text(json.dumps(rows, indent=1))
    header = " | ".join(f"lambda {value:g}: FLOPs % / test acc" for value in args.lambdas)
    print(f"| gate | granularity | {header} |")
    print("|---|---|" + "---|" * len(args.lambdas))
    for granularity in args.granularities:
        for gate in args.gates:
            cells_of = [r for r in rows if (r["gate"], r["granularity"]) == (gate, granularity)]
            shown = [
                f"{100 * r['flops_ratio']:.2f} / {r['test_accuracy']:.4f}"
                if "error" not in r
                else "error"
                for r in cells_of
            ]
            print(f"| {gate} | {granularity} | " + " | ".join(shown) + " |")


if __name__ == "__main__":
    main()
