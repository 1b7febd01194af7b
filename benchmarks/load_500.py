"""A 500-trial search of fast trials: does the orchestration cost per trial grow with the trials
before it? Also the driver's peak memory, the store's size and the dashboard with 500 points.

Usage: python benchmarks/load_500.py [--trials 500] [--concurrency 2] [--sampler random]
                                      [--keep DIR] [--chromium /usr/bin/chromium]

Runs a real search (local Ray, Optuna, an MLflow SQLite store with its artifacts in a temporary
folder) of trials that take a fraction of a second: an MLP with 16 hidden units on 256
synthetic samples, one epoch, no fine-tuning, one CPU and one torch thread each.

Definitions (t_i = when the driver printed the progress line of the i-th logged trial, c = the
concurrency, s_i = ``trial_seconds`` of the i-th logged trial, its whole trial function inside
the Ray worker):

    cost per trial over trials a..b = ((t_b - t_(a-1)) * c - sum s_a..s_b) / (b - a + 1)

i.e. the worker-seconds of the window that were not trial compute (scheduling, Ray's result
and checkpoint round trip, Optuna's suggest, MLflow logging, the front update), per trial. The
first window starts at t_1, so it covers trials 2-50. Beside it, the driver-side part alone:
the wall time of each ``SearchTracker.log_trial`` call (child run, front tags, pareto.csv,
hypervolume), timed by wrapping the tracker this script hands to the search; and, less
disturbed by other processes on a shared machine, CPU time: the driver process's CPU seconds
(all its threads: Tune's loop, the callbacks, MLflow) between the window's first and last
progress lines per trial, and the CPU seconds of each ``log_trial`` (``time.thread_time``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

SPACE = """
name: load-500
model: {{name: mlp, options: {{hidden: [16]}}}}
data: {{name: synthetic, options: {{n_samples: 256}}}}
trials: {trials}
concurrency: {concurrency}
sampler: {{name: {sampler}, seed: 0}}
resources: {{cpu: 1}}
train: {{epochs: 1, finetune_epochs: 0, batch_size: 64, gate_lr: 0.1}}
latency: {{runtime: off}}   # orchestration is measured here, not the trials' own timing
space:
  gate: [hard_concrete, arm, trainable_gate]
  granularity: [neuron]
  penalty.lambda: {{loguniform: [0.01, 1.0]}}
"""

#: the windows of logged trials (1-based, inclusive) the costs are reported for
WINDOWS = ((1, 50), (201, 250), (451, 500))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--sampler", default="random", choices=["random", "tpe", "nsga2"])
    parser.add_argument("--keep", type=Path, default=None, help="run in this folder, keep it")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument(
        "--profile", type=Path, default=None, help="cProfile each window into DIR/a-b.prof"
    )
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # workers inherit it: one thread per trial
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="archsearch-load-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)  # MLflow puts a SQLite store's artifacts in ./mlruns
        run(folder, args)


def run(folder: Path, args: argparse.Namespace) -> None:
    import archsearch.search.run as search_run
    from archsearch.space import load_spec

    space = folder / "space.yaml"
    space.write_text(SPACE.format(**vars(args)))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    stamps: list[float] = []
    cpu: list[float] = []
    rss: dict[int, float] = {}
    log_seconds: list[tuple[float, float]] = []

    profiles = window_profiler(args.profile)

    def progress(line: str) -> None:
        if line.startswith("["):
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())
            profiles(len(stamps))
            if len(stamps) in {b for _, b in WINDOWS}:
                rss[len(stamps)] = current_rss_mib()
        print(line, flush=True)

    search_run.SearchTracker = timed_tracker(search_run.SearchTracker, log_seconds)
    started = time.perf_counter()
    outcome = search_run.run_search(
        load_spec(space), tracking_uri=uri, storage=str(folder / "ray"), on_progress=progress
    )
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trial_seconds = trial_seconds_in_log_order(uri, outcome)
    print(f"\n{args.trials} trials, concurrency {args.concurrency}, sampler {args.sampler}")
    print(f"search wall time {wall:.0f} s; {outcome.finished} finished, {outcome.failed} failed")
    print(f"trial compute (trial_seconds): median {statistics.median(trial_seconds):.2f} s")
    for a, b in WINDOWS:
        if b > len(stamps):
            continue
        cost = window_cost(stamps, trial_seconds, a, b, args.concurrency)
        driver_cpu = window_cost(cpu, [0.0] * len(cpu), a, b, 1)
        wall_ms = statistics.median(w for w, _ in log_seconds[a - 1 : b]) * 1000
        cpu_ms = statistics.median(c for _, c in log_seconds[a - 1 : b]) * 1000
        print(
            f"trials {a:>3}-{b}: orchestration cost {cost:.3f} s/trial; driver CPU "
            f"{driver_cpu * 1000:.0f} ms/trial; log_trial median {wall_ms:.0f} ms wall, "
            f"{cpu_ms:.0f} ms CPU; driver RSS after trial {b}: {rss.get(b, 0):.0f} MiB"
        )
    print(f"driver peak memory (ru_maxrss): {peak:.0f} MiB")
    print(f"store: {store_sizes(folder)}")
    dashboard(folder, uri, outcome.name, args.chromium)


def window_profiler(folder: Path | None) -> Any:
    """Called with the count of logged trials: profiles the driver's main thread (Tune's loop
    and the callbacks) from the start to the end of each window, to compare where it goes."""
    import cProfile

    running: dict[str, cProfile.Profile] = {}

    def at(count: int) -> None:
        for a, b in WINDOWS if folder else ():
            if count == a:
                running["now"] = cProfile.Profile()
                running["now"].enable()
            elif count == b and "now" in running:
                profile = running.pop("now")
                profile.disable()
                folder.mkdir(parents=True, exist_ok=True)
                profile.dump_stats(str(folder / f"{a}-{b}.prof"))

    return at


def timed_tracker(base: type, seconds: list[tuple[float, float]]) -> type:
    """The search's tracker class, with each ``log_trial`` timed: (wall, CPU) seconds."""

    class TimedTracker(base):  # type: ignore[misc, valid-type]
        def log_trial(self, *args: Any, **kwargs: Any) -> Any:
            start, start_cpu = time.perf_counter(), time.thread_time()
            try:
                return super().log_trial(*args, **kwargs)
            finally:
                seconds.append((time.perf_counter() - start, time.thread_time() - start_cpu))

    return TimedTracker


def window_cost(stamps: list[float], compute: list[float], a: int, b: int, c: int) -> float:
    first = max(a, 2)  # t_0 would be the start-up: the first window starts at t_1
    span = stamps[b - 1] - stamps[first - 2]
    return (span * c - sum(compute[first - 1 : b])) / (b - first + 1)


def trial_seconds_in_log_order(uri: str, outcome: Any) -> list[float]:
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(outcome.name).experiment_id
    runs = client.search_runs(
        [experiment],
        filter_string=f"tags.mlflow.parentRunId = '{outcome.parent_run_id}'",
        max_results=10000,
    )
    runs.sort(key=lambda r: r.info.end_time)
    return [r.data.metrics.get("trial_seconds", 0.0) for r in runs]


def current_rss_mib() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def store_sizes(folder: Path) -> str:
    def size(path: Path) -> float:
        files = [path] if path.is_file() else path.rglob("*")
        return sum(p.stat().st_size for p in files if p.is_file()) / 2**20

    parts = {
        "mlflow.db": folder / "mlflow.db",
        "artifacts (mlruns/)": folder / "mlruns",
        "Ray state (ray/)": folder / "ray",
    }
    return ", ".join(f"{name} {size(path):.1f} MiB" for name, path in parts.items())


def dashboard(folder: Path, uri: str, name: str, chromium: str) -> None:
    from dashboard_load import browser_timings  # benchmarks/ is on sys.path when run as a script

    output = folder / "x.html"
    command = [sys.executable, "-m", "archsearch.cli", "dashboard", name, "-o", str(output)]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([*command, "--tracking-uri", uri], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    print(
        f"`archsearch dashboard {name} -o x.html` (whole command): best of 3 {min(times):.2f} s, "
        f"{output.stat().st_size / 1024:.0f} KiB"
    )
    ready, clicks = browser_timings(output, 5, chromium)
    print(
        f"page load to interactive (dashboardReady), 5 loads: median "
        f"{statistics.median(ready):.0f} ms, max {max(ready):.0f} ms; click -> detail panel "
        f"median {statistics.median(clicks):.1f} ms"
    )


if __name__ == "__main__":
    main()
