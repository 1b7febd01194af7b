"""Time to interactive of the Pareto dashboard of a 200-trial search, in headless Chromium.

Usage: python benchmarks/dashboard_load.py [--trials 200] [--loads 5] [--keep DIR]

Builds a real MLflow SQLite store the way a search fills it (``SearchTracker.log_trial``, so
every run has its params, metrics, tags and artifacts, the parent its hypervolume history):
six real trials give the artifacts, and each logged run varies their metrics along a noisy
accuracy/FLOPs trade-off; about one run in twenty fails. Then it times ``archsearch
dashboard`` (collect + render + write) and, over several page loads in Chromium, the time
from navigation start to ``window.dashboardReady`` (set by the page after its first render),
plus how long a click on a point takes to show the detail panel.

Needs the playwright package (``pip install playwright``) and a Chromium at /usr/bin/chromium
(Debian: ``apt-get install chromium``) or ``--chromium PATH``; no browser is downloaded.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from archsearch.config import TrialConfig
from archsearch.dashboard import write_dashboard
from archsearch.tracking import SearchTracker
from archsearch.trial import load_data, run_trial

EXPERIMENT = "bench-dashboard"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: (gate, granularity) of the real trials whose artifacts the logged runs reuse
REAL = [
    ("hard_concrete", "neuron"),
    ("arm", "neuron"),
    ("gumbel_softmax", "neuron"),
    ("trainable_gate", "neuron"),
    ("learned_threshold", "weight"),
    ("diffprune", "weight"),
]
#: time between a synthetic click and the next frame having painted the detail panel
CLICK_JS = """async () => {
  const pts = document.querySelectorAll('#panel-val .pt');
  const t0 = performance.now();
  pts[Math.floor(pts.length / 2)].dispatchEvent(new MouseEvent('click', {bubbles: true}));
  await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));
  if (!document.querySelector('#detail table.layers')) throw new Error('no detail panel');
  return performance.now() - t0;
}"""


def real_trials(root: Path) -> list[tuple[dict, Path]]:
    """Six real trials of a small MLP on digits: one per (gate, granularity) above."""
    configs = [
        TrialConfig(
            model="mlp",
            model_options={"hidden": [64, 32]},
            data="digits",
            epochs=1,
            finetune_epochs=0,
            gate=gate,
            granularity=granularity,
            penalty_lambda=1.0,
            gate_lr=0.05,
        )
        for gate, granularity in REAL
    ]
    data = load_data(configs[0])
    out = []
    for i, config in enumerate(configs):
        folder = root / f"trial{i}"
        run_trial(config, out_dir=folder, data=data)
        out.append(({"gate": config.gate, "granularity": config.granularity}, folder))
    return out


def varied_metrics(rng: random.Random, dense: int) -> tuple[float, dict]:
    """A point on a noisy trade-off: accuracy falls off as the kept share of FLOPs shrinks."""
    penalty_lambda = 10 ** rng.uniform(-3, 1)
    ratio = min(1.0, 10 ** rng.uniform(-2.2, 0))
    val = 0.975 - 0.55 * (1 - ratio) ** 12 - abs(rng.gauss(0, 0.06))
    return penalty_lambda, {
        "val_accuracy": val,
        "test_accuracy": val + rng.gauss(0, 0.01),
        "flops": round(dense * ratio),
        "flops_ratio": round(dense * ratio) / dense,
        "dense_flops": dense,
        "params_ratio": min(1.0, ratio * 1.05),
    }


def log_search(store: str, trials: list[tuple[dict, Path]], count: int) -> float:
    rng = random.Random(0)
    tracker = SearchTracker(EXPERIMENT, tracking_uri=store, search_params={"trials": count})
    start = time.perf_counter()
    for i in range(count):
        params, folder = trials[i % len(trials)]
        dense = json.loads((folder / "metrics.json").read_text())["dense_flops"]
        penalty_lambda, metrics = varied_metrics(rng, dense)
        params = {**params, "penalty.lambda": penalty_lambda}
        if rng.random() < 0.05:
            tracker.log_trial(f"t{i:04d}", params, error="DegenerateTrialError: NaN loss")
        else:
            tracker.log_trial(f"t{i:04d}", params, metrics=metrics, trial_dir=folder)
    tracker.finish(log_front_models=False)
    return time.perf_counter() - start


def browser_timings(page_path: Path, loads: int, chromium: str) -> tuple[list[float], list[float]]:
    from playwright.sync_api import sync_playwright

    ready, clicks = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for _ in range(loads):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(page_path.as_uri())
                page.wait_for_function("window.dashboardReady !== undefined")
                ready.append(page.evaluate("window.dashboardReady"))
                clicks.append(page.evaluate(CLICK_JS))
                page.close()
        finally:
            browser.close()
    return ready, clicks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--keep", type=Path, default=None, help="build the store here, keep it")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="archsearch-bench-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        store = f"sqlite:///{root / 'mlflow.db'}"
        logged = log_search(store, real_trials(root), args.trials)
        print(f"logged {args.trials} trials with SearchTracker in {logged:.1f} s ({store})")
        output = root / "dashboard.html"
        start = time.perf_counter()
        report = write_dashboard(EXPERIMENT, output, store)
        built = time.perf_counter() - start
        print(
            f"archsearch dashboard: {built:.2f} s (collect + render + write, in process), "
            f"{report.bytes / 1024:.0f} KiB; {report.summary()}"
        )
        ready, clicks = browser_timings(output, args.loads, args.chromium)
    print(
        f"time to interactive (navigation start → dashboardReady), {args.loads} loads: "
        f"median {statistics.median(ready):.0f} ms, max {max(ready):.0f} ms"
    )
    print(
        f"click → detail panel painted: median {statistics.median(clicks):.1f} ms, "
        f"max {max(clicks):.1f} ms"
    )


if __name__ == "__main__":
    main()
