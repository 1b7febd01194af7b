"""Wall time of the commands that only read: ``--help``, ``pareto``, ``gates``, ``dashboard``.

Issue 11 asks that they import only what they need (Ray never, torch only where a model is
built): ``archsearch --help`` < 0.5 s and ``archsearch pareto`` < 1.5 s, best of 5. ``pareto``
reads a local SQLite store's file itself (``archsearch.sqlite_runs``), without MLflow; the
MLflow rows below are what it pays on any other store.

The store is real: three small trials (``mlp`` hidden=[8] on digits, one epoch) trained in
this process and logged through ``SearchTracker`` into a new SQLite store, the way a search
logs them. Each command then runs as a user runs it, a fresh ``python -m archsearch.cli``
process, and its best wall time of N runs is printed as a table.

    .venv/bin/python benchmarks/read_commands.py            # best of 5
    .venv/bin/python benchmarks/read_commands.py --repeat 3 --keep /tmp/read-store
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAME = "quickstart"
SAMPLED = [
    {"gate": "hard_concrete", "granularity": "neuron", "penalty.lambda": 0.05},
    {"gate": "hard_concrete", "granularity": "neuron", "penalty.lambda": 0.5},
    {"gate": "gumbel_softmax", "granularity": "neuron", "penalty.lambda": 2.0},
    {"gate": "arm", "granularity": "neuron", "penalty.lambda": 5.0},
]


#: MLflow's own floor, what ``pareto`` pays reading through MLflow (a server, another schema):
#: import it, open the SQLite store, run one query
_MLFLOW_QUERY = (
    f"import mlflow; mlflow.MlflowClient('sqlite:///mlflow.db').get_experiment_by_name({NAME!r})"
)


def build_store(folder: Path) -> str:
    """A finished search of four real trials in ``folder/mlflow.db``; returns its URI."""
    from archsearch.config import TrialConfig
    from archsearch.tracking import SearchTracker
    from archsearch.trial import load_data, run_trial

    def config(params: dict) -> TrialConfig:
        return TrialConfig(
            model="mlp",
            model_options={"hidden": [8]},
            data="digits",
            epochs=1,
            finetune_epochs=0,
            gate=params["gate"],
            granularity=params["granularity"],
            penalty_lambda=params["penalty.lambda"],
        )

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    tracker = SearchTracker(NAME, tracking_uri=uri, search_params={"trials": len(SAMPLED)})
    data = load_data(config(SAMPLED[0]))
    for i, params in enumerate(SAMPLED):
        trial_dir = folder / f"trial{i}"
        result = run_trial(config(params), out_dir=trial_dir, data=data)
        tracker.log_trial(f"t{i}", params, metrics=dict(result.metrics), trial_dir=trial_dir)
    tracker.finish(log_front_models=False)
    return uri


def best_wall(argv: list[str], repeat: int, cwd: Path) -> float:
    """Best wall time of ``repeat`` fresh ``python ARGV`` processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *argv],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
        )
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"python {' '.join(argv)} failed:\n{done.stderr}")
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (best of)")
    parser.add_argument("--keep", type=Path, default=None, help="build the store here, keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "mlflow.db").exists():
            build_store(folder)
        cli = ["-m", "archsearch.cli"]
        pareto = [*cli, "pareto", NAME]
        commands = {
            "archsearch --help": [*cli, "--help"],
            f"archsearch pareto {NAME}": pareto,
            f"archsearch pareto {NAME} --by granularity": [*pareto, "--by", "granularity"],
            "archsearch gates": [*cli, "gates"],
            f"archsearch dashboard {NAME} -o x.html": [*cli, "dashboard", NAME, "-o", "x.html"],
            # floors: what a command that needs them cannot go below
            "python -c pass": ["-c", "pass"],
            "python -c 'import numpy, sqlite3'": ["-c", "import numpy, sqlite3"],
            "python -c 'import torch'": ["-c", "import torch"],
            "python -c 'import mlflow'": ["-c", "import mlflow"],
            "  + MLflow's SQLite store, one query": ["-c", _MLFLOW_QUERY],
        }
        print(f"best of {args.repeat}, wall seconds, fresh process each run; store {folder}")
        print(f"{'command':<46} {'seconds':>8}")
        for label, argv in commands.items():
            print(f"{label:<46} {best_wall(argv, args.repeat, folder):>8.2f}")


if __name__ == "__main__":
    main()
