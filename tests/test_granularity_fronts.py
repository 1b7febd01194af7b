"""The front of each granularity, next to the overall one: ``archsearch pareto --by
granularity``, the dashboard's per-granularity lines, and ``archsearch ui NAME``'s links into
the MLflow UI (the runs table filtered to a front, the search's dashboard).

One real SQLite store per module, written by ``SearchTracker`` as a search writes it, with
metrics set by hand so each front is known: the weight-granularity trials are cheap but weak,
so most of them are off the overall front and on their own. Fronts are checked against a brute
force over ``TRIALS``; the page in a headless Chromium and the links in a real MLflow UI.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import free_port, stop_group

from archsearch.cli import main
from archsearch.commands.ui import search_links
from archsearch.dashboard import collect, log_dashboard, render, write_dashboard
from archsearch.pareto import fronts_by
from archsearch.tracking import SearchTracker, artifact_names, front_filter

EXPERIMENT = "grans"
DENSE = 100_000
#: trial id -> (granularity, validation accuracy, FLOPs ratio)
TRIALS = {
    "n_wide": ("neuron", 0.95, 0.60),
    "n_mid": ("neuron", 0.90, 0.20),
    "n_small": ("neuron", 0.86, 0.04),
    "n_beaten": ("neuron", 0.80, 0.045),
    "w_cheap": ("weight", 0.70, 0.01),
    "w_tiny": ("weight", 0.30, 0.003),
    "w_mid": ("weight", 0.84, 0.30),  # beaten by n_mid overall, on the weight front
    "w_beaten": ("weight", 0.60, 0.02),
}
CHROMIUM = os.environ.get("ARCHSEARCH_CHROMIUM", "/usr/bin/chromium")


def _front_of(granularity: str | None) -> set[str]:
    """Brute force: trials no trial (of ``granularity``, or of any when None) beats."""
    pool = {t: v for t, v in TRIALS.items() if granularity in (None, v[0])}

    def beaten(a: str) -> bool:
        _, acc, ratio = pool[a]
        return any(
            b != a and acc2 >= acc and r2 <= ratio and (acc2 > acc or r2 < ratio)
            for b, (_, acc2, r2) in pool.items()
        )

    return {t for t in pool if not beaten(t)}


GRANULARITIES = ("neuron", "weight")


def test_a_trial_is_compared_only_within_its_granularity() -> None:
    rows = [
        {"run_id": t, "granularity": g, "val_accuracy": acc, "flops": ratio * DENSE}
        for t, (g, acc, ratio) in TRIALS.items()
    ]
    fronts = fronts_by([*rows, {"run_id": "x", "val_accuracy": 0.1, "flops": 1.0}], "granularity")
    assert list(fronts) == ["-", "neuron", "weight"]  # name order; no granularity: "-"
    for granularity in GRANULARITIES:
        assert {r["run_id"] for r in fronts[granularity]} == _front_of(granularity)
    assert "w_mid" in _front_of("weight") and "w_mid" not in _front_of(None)


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("grans")
    store = f"sqlite:///{root / 'mlflow.db'}"
    tracker = SearchTracker(EXPERIMENT, tracking_uri=store)
    runs = {}
    for trial_id, (granularity, accuracy, ratio) in TRIALS.items():
        metrics = {
            "val_accuracy": accuracy,
            "test_accuracy": accuracy - 0.01,
            "flops": ratio * DENSE,
            "flops_ratio": ratio,
        }
        params = {"gate": "arm", "granularity": granularity, "penalty.lambda": 0.1}
        runs[trial_id] = tracker.log_trial(trial_id, params, metrics=metrics)
    tracker.finish(log_front_models=False)
    return {"store": store, "runs": runs, "tracker": tracker, "root": root}


def _pareto(search, capsys, *flags: str) -> str:
    assert main(["pareto", EXPERIMENT, *flags, "--tracking-uri", search["store"]]) == 0
    return capsys.readouterr().out


def test_pareto_by_granularity_prints_one_table_per_granularity(search, capsys) -> None:
    blocks = _pareto(search, capsys, "--by", "granularity").strip().split("\n\n")
    assert len(blocks) == 2
    for block, granularity in zip(blocks, GRANULARITIES, strict=True):
        heading, header, *lines = block.splitlines()
        front = _front_of(granularity)
        assert heading == f"granularity {granularity}: {len(front)} trials on its front"
        assert header.startswith("run")
        assert {line.split()[0] for line in lines} == {search["runs"][t][:8] for t in front}
        ratios = [TRIALS[t][2] for t in sorted(front, key=lambda t: TRIALS[t][2])]
        assert [float(line.split()[7].rstrip("%")) / 100 for line in lines] == ratios


def test_pareto_by_granularity_as_json_and_csv(search, capsys) -> None:
    expected = {(g, t) for g in GRANULARITIES for t in _front_of(g)}
    rows = json.loads(_pareto(search, capsys, "--by", "granularity", "--json"))
    assert {(r["granularity"], r["trial_id"]) for r in rows} == expected
    assert len(rows) == len(expected)
    table = list(
        csv.DictReader(io.StringIO(_pareto(search, capsys, "--by", "granularity", "--csv")))
    )
    assert {(r["granularity"], r["trial_id"]) for r in table} == expected
    assert [r["granularity"] for r in table] == sorted(r["granularity"] for r in table)


def test_by_granularity_with_a_budget_is_the_best_of_each(search, capsys) -> None:
    rows = json.loads(
        _pareto(search, capsys, "--by", "granularity", "--max-flops-ratio", "0.05", "--json")
    )
    firsts = {}
    for row in rows:
        firsts.setdefault(row["granularity"], row["trial_id"])
    assert firsts == {"neuron": "n_small", "weight": "w_cheap"}
    assert {r["trial_id"] for r in rows} == {"n_small", "w_cheap", "w_tiny"}


def test_the_dashboard_marks_each_granularitys_front(search) -> None:
    payload = collect(EXPERIMENT, search["store"])
    by_trial = {r["trial_id"]: r for r in payload["runs"]}
    own = {t for t, r in by_trial.items() if r["on_granularity_front"]}
    assert own == _front_of("neuron") | _front_of("weight")
    assert {t for t, r in by_trial.items() if r["on_front"]} == _front_of(None)


# -- the page, in a headless Chromium ------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="no playwright package")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


def test_the_page_draws_and_toggles_a_front_per_granularity(search, browser, tmp_path) -> None:
    page_file = tmp_path / "dashboard.html"
    write_dashboard(EXPERIMENT, page_file, search["store"])
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(page_file.as_uri())
    page.wait_for_selector("body[data-ready='true']", timeout=10_000)
    for granularity in GRANULARITIES:
        line = page.locator(f"#panel-val polyline.gran-front[data-granularity='{granularity}']")
        assert len(line.get_attribute("points").split()) == len(_front_of(granularity))
        assert line.is_visible()
    page.screenshot(path=str(tmp_path / "granularity-fronts.png"))
    page.uncheck("input[data-gran-front='weight']")
    assert page.locator("polyline.gran-front[data-granularity='weight']").first.is_hidden()
    assert page.locator("polyline.gran-front[data-granularity='neuron']").first.is_visible()
    page.select_option("#front-scope", "weight")
    names = page.locator("#front-table tbody tr td:first-child").all_inner_texts()
    assert sorted(names) == sorted(f"arm-weight-{t}" for t in _front_of("weight"))
    assert "weight granularity" in page.inner_text("#front-title")
    assert problems == []
    page.close()


# -- archsearch ui NAME: links into the MLflow UI ------------------------------------------------


def _query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).fragment.split("?", 1)[1]))


def test_ui_prints_links_to_the_fronts_and_the_dashboard(search) -> None:
    tracker = search["tracker"]
    base = "http://127.0.0.1:5999"
    lines = search_links(search["store"], base, EXPERIMENT)
    assert lines[0] == f"open {base}/#/experiments/{tracker.experiment_id}/runs"
    front = next(line for line in lines if line.startswith("the front of search-"))
    assert f"({len(_front_of(None))} runs, cheapest first)" in front
    query = _query(front.split()[-1])
    assert query["searchFilter"] == front_filter(tracker.parent_run_id)
    assert query["orderByKey"] == "metrics.`flops`" and query["orderByAsc"] == "true"
    for granularity in GRANULARITIES:
        line = next(line for line in lines if line.startswith(f"  {granularity} "))
        ids = re.findall(r"'([0-9a-f]{32})'", _query(line.split()[-1])["searchFilter"])
        assert set(ids) == {search["runs"][t] for t in _front_of(granularity)}
    dashboard = next(line for line in lines if line.startswith("the dashboard: "))
    if "dashboard.html" in artifact_names(tracker.client, tracker.parent_run_id):
        url = f"{base}/#/experiments/{tracker.experiment_id}/runs/{tracker.parent_run_id}"
        assert dashboard == f"the dashboard: {url}/artifacts/dashboard.html"
    else:  # a search still running has none yet: how to get one now
        assert "archsearch dashboard grans -o dashboard.html" in dashboard


def _ui_lines(ui: subprocess.Popen) -> list[str]:
    lines = []
    while not lines or not lines[-1].startswith("stop it with Ctrl-C"):
        line = ui.stdout.readline()
        assert line, "archsearch ui exited before printing its links"
        lines.append(line.rstrip("\n"))
    return lines


def _goto_when_up(page, url: str, ui: subprocess.Popen) -> None:
    deadline = time.monotonic() + 90
    while True:
        try:
            page.goto(url, timeout=10_000)
            return
        except Exception:
            assert ui.poll() is None, "archsearch ui exited"
            assert time.monotonic() < deadline, "the MLflow UI did not start in 90 s"
            time.sleep(0.5)


@pytest.mark.slow  # the MLflow server takes 10-20 s to start on two cores
def test_the_links_open_the_filtered_runs_table_and_the_dashboard_in_mlflow(
    search, browser, tmp_path
) -> None:
    client, parent = search["tracker"].client, search["tracker"].parent_run_id
    log_dashboard(client, parent, render(collect(EXPERIMENT, search["store"])))
    port = free_port()
    command = [sys.executable, "-m", "archsearch.cli", "ui", EXPERIMENT, "--port", str(port)]
    ui = subprocess.Popen(
        [*command, "--tracking-uri", search["store"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        lines = _ui_lines(ui)
        starts = {"front": "the front of search-", **{g: f"  {g} " for g in GRANULARITIES}}
        for name, start in starts.items():
            line = next(line for line in lines if line.startswith(start))
            front = _front_of(None if name == "front" else name)
            _goto_when_up(page, line.split()[-1], ui)
            page.get_by_text(f"{len(front)} matching runs").wait_for(timeout=60_000)
            for trial_id in front:  # the rows are the front's runs, by name
                run_name = f"arm-{TRIALS[trial_id][0]}-{trial_id}"
                page.get_by_text(run_name, exact=True).first.wait_for(timeout=10_000)
            page.screenshot(path=str(tmp_path / f"mlflow-{name}.png"))
        dashboard = next(x for x in lines if x.startswith("the dashboard: http"))
        page.goto(dashboard.split()[-1])
        frame = page.frame_locator("iframe").first  # MLflow shows an HTML artifact in a frame
        counts = frame.locator("#counts")
        counts.wait_for(timeout=60_000)
        front = len(_front_of(None))
        assert counts.inner_text() == f"8 trials: 8 finished, 0 failed; front: {front}"
        assert frame.locator("polyline.gran-front").count() == 2 * len(GRANULARITIES)
        page.screenshot(path=str(tmp_path / "mlflow-dashboard.png"))
    finally:
        page.close()
        stop_group(ui, timeout=20)
        ui.stdout.close()
