"""The Pareto dashboard in a real headless Chromium, on a real search's MLflow store.

One store per module (five real trials on digits plus a crash, logged by ``SearchTracker``)
and one browser per module: creating the database and starting Chromium cost seconds each.
The page is opened from file:// exactly as a user opens the written file; the MLflow UI is
started with ``archsearch ui`` as a user starts it, and the dashboard's run link is followed
into it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from archsearch.cli import main
from archsearch.config import TrialConfig
from archsearch.dashboard import collect, log_dashboard, render, write_dashboard
from archsearch.pareto import non_dominated
from archsearch.tracking import OBJECTIVES_TAG, SearchTracker
from archsearch.trial import load_data, run_trial

CHROMIUM = os.environ.get("ARCHSEARCH_CHROMIUM", "/usr/bin/chromium")
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
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ARCHSEARCH_CHROMIUM)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the playwright package is missing (pip install playwright)"
)

EXPERIMENT = "dash-digits"
SAMPLED = [
    {"gate": "arm", "granularity": "neuron", "penalty.lambda": 0.05, "arm.k": 7.0},
    {"gate": "hard_concrete", "granularity": "neuron", "penalty.lambda": 0.5},
    {"gate": "gumbel_softmax", "granularity": "neuron", "penalty.lambda": 2.0},
    {"gate": "hard_concrete", "granularity": "weight", "penalty.lambda": 1.0},
    {"gate": "learned_threshold", "granularity": "neuron", "penalty.lambda": 5.0},
]
UI_URL = "http://127.0.0.1:5999"


def _config(params: dict) -> TrialConfig:
    options = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(params["gate"])}
    return TrialConfig(
        model="mlp",
        model_options={"hidden": [16]},
        data="digits",
        epochs=1,
        finetune_epochs=0,
        batch_size=64,
        gate=params["gate"],
        granularity=params["granularity"],
        penalty_lambda=params["penalty.lambda"],
        gate_options=options,
        gate_lr=0.05,
    )


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> dict:
    """Five real trials and one crash, logged as a search would log them."""
    root = tmp_path_factory.mktemp("search")
    store = f"sqlite:///{root / 'mlflow.db'}"
    data = load_data(_config(SAMPLED[0]))
    tracker = SearchTracker(EXPERIMENT, tracking_uri=store)
    for i, params in enumerate(SAMPLED):
        run_trial(_config(params), out_dir=root / f"t{i}", data=data)
        tracker.log_trial(f"t{i}", params, trial_dir=root / f"t{i}")
    tracker.log_trial("t_crash", SAMPLED[0], error="Traceback ...\nDegenerateTrialError: NaN loss")
    client = mlflow.MlflowClient(store)
    runs = {
        r.info.run_id: r
        for r in client.search_runs(
            [tracker.experiment_id], f"tags.mlflow.parentRunId = '{tracker.parent_run_id}'"
        )
    }
    return {"tracker": tracker, "store": store, "client": client, "runs": runs}


@pytest.fixture(scope="module")
def page_file(search, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("page") / "dashboard.html"
    write_dashboard(EXPERIMENT, output, search["store"], ui_url=UI_URL)
    return output


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.problems = []  # page errors, console errors, and any request that leaves file://
    page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda m: page.problems.append(f"console: {m.text}") if m.type == "error" else None,
    )
    page.on(
        "request",
        lambda r: None if r.url.startswith("file://") else page.problems.append(r.url),
    )
    yield page
    page.close()


def _open(page, path: Path) -> None:
    page.goto(path.as_uri())
    _wait_until(page, "window.dashboardReady !== undefined", timeout=10)


def _finished(search) -> list:
    return [r for r in search["runs"].values() if r.info.status == "FINISHED"]


def _reachable_point(page, panel: str):
    """A marker whose centre is not covered by another one (real mouse events hit the top
    element), with that centre in page coordinates."""
    points = page.locator(f"{panel} .pt")
    for i in range(points.count()):
        box = points.nth(i).bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        on_top = points.nth(i).evaluate(
            "(el, [x, y]) => document.elementFromPoint(x, y) === el", [x, y]
        )
        if on_top:
            return points.nth(i), x, y
    raise AssertionError(f"every marker in {panel} is covered by another")


# -- the page ---------------------------------------------------------------------------------


def test_points_front_and_header_match_the_store(search, page_file, page, tmp_path) -> None:
    _open(page, page_file)
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    finished = _finished(search)
    assert page.locator("#panel-val .pt").count() == len(finished) == 5
    assert page.locator("#panel-test .pt").count() == len(finished)
    # the reference front: non-dominated on (val_accuracy max, flops min) over the store
    points = [[r.data.metrics["val_accuracy"], r.data.metrics["flops"]] for r in finished]
    flags = non_dominated(points, ["max", "min"])
    front = [r for r, on in zip(finished, flags, strict=True) if on]
    for panel in ("#panel-val", "#panel-test"):
        vertices = page.get_attribute(f"{panel} polyline.front-line", "points").split()
        assert len(vertices) == len(front)
    assert page.locator("#panel-val .pt.front").count() == len(front)
    names = page.locator("#front-table tbody tr td:first-child").all_inner_texts()
    assert sorted(names) == sorted(r.info.run_name for r in front)
    # the search's own Pareto tags agree with the recomputed front
    assert {r["run_id"] for r in search["tracker"].front()} == {r.info.run_id for r in front}
    header = page.inner_text("#counts")
    assert header == f"6 trials: 5 finished, 1 failed; front: {len(front)}"
    flops = [p[1] for p in points]
    assert ("log scale" in page.text_content("#panel-val")) == (max(flops) / min(flops) > 10)
    legend = page.inner_text("#legend")
    for name in ("arm", "hard_concrete", "gumbel_softmax", "learned_threshold", "weight"):
        assert name in legend
    assert page.locator("#hypervolume polyline").count() == 1
    assert page.problems == []


def test_hover_shows_the_runs_parameters(search, page_file, page, tmp_path) -> None:
    _open(page, page_file)
    assert page.is_hidden("#tooltip")
    _, x, y = _reachable_point(page, "#panel-val")
    page.mouse.move(x, y)
    page.wait_for_selector("#tooltip", state="visible", timeout=5_000)
    page.screenshot(path=str(tmp_path / "hover.png"))
    text = page.inner_text("#tooltip")
    run = next(r for r in _finished(search) if r.info.run_name in text)
    assert f"penalty.lambda {float(run.data.params['penalty.lambda']):g}" in text
    assert run.data.tags["archsearch.gate"] in text
    page.mouse.move(5, 5)
    page.wait_for_selector("#tooltip", state="hidden", timeout=5_000)


def test_click_shows_layers_link_and_export_command(search, page_file, page, tmp_path) -> None:
    _open(page, page_file)
    point, x, y = _reachable_point(page, "#panel-test")
    page.mouse.click(x, y)
    page.wait_for_selector("#detail table.layers", timeout=5_000)
    page.screenshot(path=str(tmp_path / "detail.png"), full_page=True)
    run_id = re.search(r"run ([0-9a-f]{32})", page.inner_text("#detail")).group(1)
    run = search["runs"][run_id]
    assert run.info.run_name in page.inner_text("#detail h2")
    subnetwork = json.loads(
        Path(
            search["client"].download_artifacts(run_id, "subnetwork.json", str(tmp_path))
        ).read_text()
    )
    rows = page.locator("#detail table.layers tbody tr")
    assert rows.count() == len(subnetwork["layers"])
    for row, layer in zip(rows.all(), subnetwork["layers"], strict=True):
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == layer["name"]
        assert f"{layer['out']} / {layer['dense_out']}" in cells
        assert f"{layer['flops']:,}" in cells
    command = page.inner_text("#export-cmd")
    assert command.startswith(f"archsearch export {run_id} --format onnx -o ")
    assert f"--tracking-uri {search['store']}" in command  # a tmp store, not the default
    exp = search["tracker"].experiment_id
    link = page.get_attribute("#detail a.mlflow-link", "href")
    assert link == f"{UI_URL}/#/experiments/{exp}/runs/{run_id}"
    if run.data.tags["archsearch.pareto"] == "true":  # its row in the front table lights up
        row = page.locator(f"#front-table tr[data-i='{point.get_attribute('data-i')}']")
        assert "selected" in row.get_attribute("class")
    page.click("#detail button.copy")
    _wait_until(page, "document.querySelector('#detail button.copy').textContent !== 'Copy'")
    page.keyboard.press("Escape")
    assert page.locator("#detail table.layers").count() == 0
    assert page.problems == []


def test_weight_granularity_shows_densities(search, page_file, page) -> None:
    _open(page, page_file)
    weight = next(r for r in _finished(search) if r.data.tags["archsearch.granularity"] == "weight")
    page.goto(f"{page_file.as_uri()}#run={weight.info.run_id}")  # a deep link selects a run
    page.wait_for_selector("#detail table.layers", timeout=5_000)
    assert weight.info.run_id in page.inner_text("#detail")
    assert "density" in page.locator("#detail table.layers thead").inner_text()


# -- the payload and the file ------------------------------------------------------------------


def test_payload_is_strict_json_and_cannot_break_out_of_its_script(search) -> None:
    payload = collect(EXPERIMENT, search["store"])
    json.dumps(payload, allow_nan=False)
    payload["runs"][0]["name"] = "</script><script>window.pwned = 1</script>"
    page = render(payload)
    template_closings = render({**payload, "runs": []}).count("</script>")
    assert page.count("</script>") == template_closings


def test_cli_writes_the_file_and_prints_counts(search, tmp_path, capsys) -> None:
    output = tmp_path / "sub" / "d.html"
    assert (
        main(["dashboard", EXPERIMENT, "-o", str(output), "--tracking-uri", search["store"]]) == 0
    )
    out = capsys.readouterr().out
    assert f"wrote {output}" in out
    assert "6 trials: 5 finished, 1 failed; front: " in out
    assert output.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in output.parent.iterdir()] == ["d.html"]  # no staging file left


def test_unknown_experiment_is_one_line_and_writes_nothing(search, tmp_path, capsys) -> None:
    output = tmp_path / "d.html"
    assert main(["dashboard", "nope", "-o", str(output), "--tracking-uri", search["store"]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no experiment named 'nope'" in err
    assert not output.exists()


def test_log_dashboard_attaches_the_page_to_the_parent_run(search, tmp_path) -> None:
    client, parent = search["client"], search["tracker"].parent_run_id
    html = render(collect(EXPERIMENT, search["store"]))
    log_dashboard(client, parent, html)
    assert "dashboard.html" in {a.path for a in client.list_artifacts(parent)}
    assert (
        Path(client.download_artifacts(parent, "dashboard.html", str(tmp_path))).read_text() == html
    )


# -- measured latency -------------------------------------------------------------------------

LATENCY_OBJECTIVES = {"val_accuracy": "max", "latency": "min"}
RUNTIME = "onnxruntime 1.20.1 CPU, 1 thread, batch 1 and 64"
#: (name, granularity, val accuracy, FLOPs, latency ratio): "structured" is beaten on FLOPs by
#: "weight-mid" but runs in 40% of the dense time where the weight-sparse ones take it all
TRIALS = [
    ("structured", "neuron", 0.90, 3000.0, 0.40),
    ("weight-best", "weight", 0.91, 300.0, 1.00),
    ("weight-mid", "weight", 0.89, 200.0, 1.02),
    ("poor", "neuron", 0.80, 5000.0, 0.90),
]
LATENCY_FRONT = {"structured", "weight-best"}
FLOPS_FRONT = {"weight-best", "weight-mid"}
DEFAULT_OBJECTIVES = {"val_accuracy": "max", "flops": "min"}


def _log_synthetic_search(
    store: str, experiment: str, objectives: dict | None, *, latency: bool
) -> None:
    """Four finished trials and a crash with the metrics a trial logs, and no training: what
    is drawn is all in the metrics. ``objectives`` None: a search from before the objectives
    tag (the tag removed: such a search's parent run has none)."""
    tracker = SearchTracker(experiment, tracking_uri=store, objectives=objectives)
    for name, granularity, val, flops, ratio in TRIALS:
        metrics = {"val_accuracy": val, "test_accuracy": val - 0.01, "flops": flops}
        metrics |= {"flops_ratio": flops / 6000, "dense_flops": 6000.0, "params": flops / 2}
        if latency:
            metrics |= {"latency_ratio": ratio, "latency": ratio, "latency_ms": 0.05 * ratio}
            metrics |= {"dense_latency_ms": 0.05, "latency_spread": 0.01}
            metrics |= {"latency_ratio_batched": ratio / 2, "latency_ms_batched": ratio}
        params = {"gate": "hard_concrete", "granularity": granularity, "penalty.lambda": 1.0}
        run_id = tracker.log_trial(name, params, metrics=metrics)
        if latency:  # what the trial says it timed with (``latency_runtime``)
            tracker.client.set_tag(run_id, "archsearch.latency", RUNTIME)
    tracker.log_trial("crash", params, error="Traceback ...\nRuntimeError: boom")
    if objectives is None:
        tracker.client.delete_tag(tracker.parent_run_id, OBJECTIVES_TAG)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict:
    """Three searches in one store: on latency, on FLOPs with latency measured, and an old
    one (no objectives tag, no latency)."""
    root = tmp_path_factory.mktemp("latency")
    store = f"sqlite:///{root / 'mlflow.db'}"
    searches = {
        "latency": (LATENCY_OBJECTIVES, True),
        "flops": (DEFAULT_OBJECTIVES, True),
        "old": (None, False),
    }
    pages = {}
    for key, (objectives, latency) in searches.items():
        _log_synthetic_search(store, f"dash-{key}", objectives, latency=latency)
        pages[key] = root / f"{key}.html"
        write_dashboard(f"dash-{key}", pages[key], store)
    return {"store": store, "pages": pages}


def _front_names(payload: dict) -> set[str]:
    return {r["trial_id"] for r in payload["runs"] if r["on_front"]}


def test_payload_front_follows_the_searchs_objectives(synthetic) -> None:
    latency = collect("dash-latency", synthetic["store"])
    assert latency["objectives"] == LATENCY_OBJECTIVES
    # slower on FLOPs than weight-mid, faster where it counts: on the latency front
    assert _front_names(latency) == LATENCY_FRONT
    assert latency["counts"]["front"] == len(LATENCY_FRONT)
    for search in ("flops", "old"):  # the default objectives: tagged, or from before the tag
        payload = collect(f"dash-{search}", synthetic["store"])
        assert payload["objectives"] == DEFAULT_OBJECTIVES
        assert _front_names(payload) == FLOPS_FRONT


def _latency_page(page, synthetic, search: str) -> None:
    _open(page, synthetic["pages"][search])
    assert page.locator("#panel-latency .pt").count() == len(TRIALS)  # the crash has none
    # the line joins the latency front whatever the search chose; outlined: the search's front
    vertices = page.get_attribute("#panel-latency polyline.front-line", "points").split()
    assert len(vertices) == len(LATENCY_FRONT)
    xs = [float(v.split(",")[0]) for v in vertices]
    assert xs == sorted(xs)  # drawn fastest first
    label = page.text_content("#panel-latency")
    assert "latency, share of dense (batch 1, onnxruntime 1.20.1 CPU, 1 thread)" in label
    assert "latency %" in page.inner_text("#front-table thead")


def test_latency_panel_marks_the_latency_front(synthetic, page, tmp_path) -> None:
    _latency_page(page, synthetic, "latency")
    page.screenshot(path=str(tmp_path / "latency.png"), full_page=True)
    assert page.locator("#panel-latency .pt.front").count() == len(LATENCY_FRONT)
    names = page.locator("#front-table tbody tr td:first-child").all_inner_texts()
    assert len(names) == len(LATENCY_FRONT)
    assert {t[0] for t in TRIALS if any(n.endswith(t[0]) for n in names)} == LATENCY_FRONT
    assert "front on val_accuracy (max), latency (min)" in page.inner_text("#meta")
    # hover, then click, a point of the new panel: the measured latency is spelt out
    _, x, y = _reachable_point(page, "#panel-latency")
    page.mouse.move(x, y)
    page.wait_for_selector("#tooltip", state="visible", timeout=5_000)
    text = page.inner_text("#tooltip")
    ratio = next(t[4] for t in TRIALS if t[0] in text)
    expected = f"latency {100 * ratio:.1f}% of dense ({0.05 * ratio:.3g} ms at batch 1; "
    assert expected + f"{50 * ratio:.1f}% at batch 64)" in text
    page.mouse.click(x, y)
    page.wait_for_selector("#detail h2", timeout=5_000)
    assert f"{100 * ratio:.1f}% of dense" in page.inner_text("#detail")
    assert page.locator("#panel-latency .sel[visibility='visible']").count() == 1
    assert page.problems == []


def test_flops_search_shows_which_trials_the_latency_front_would_hold(synthetic, page) -> None:
    _latency_page(page, synthetic, "flops")
    # the search's own (FLOPs) front is outlined; the line joins the latency front
    assert page.locator("#panel-latency .pt.front").count() == len(FLOPS_FRONT)
    assert "outlined: the search's front" in page.inner_text("figure:has(#panel-latency)")
    assert page.problems == []


def test_no_latency_measured_no_latency_panel(synthetic, page) -> None:
    _open(page, synthetic["pages"]["old"])
    assert page.locator("#panel-val .pt").count() == len(TRIALS)
    assert page.locator("#panel-latency").count() == 0
    assert page.locator(".plots figure").count() == 2
    assert "latency" not in page.inner_text("#front-table thead")
    assert "latency" not in page.inner_text("main")
    assert page.problems == []


# -- the MLflow UI the links point to -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_lists_the_runs_and_opens_the_dashboard_link(search, browser, tmp_path) -> None:
    port = _free_port()
    command = [sys.executable, "-m", "archsearch.cli", "ui", EXPERIMENT, "--port", str(port)]
    ui = subprocess.Popen(
        [*command, "--tracking-uri", search["store"]],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        ui.stdout.readline()
        url = ui.stdout.readline().split()[-1]
        exp = search["tracker"].experiment_id
        assert url == f"{base}/#/experiments/{exp}/runs"
        _goto_when_up(page, url, ui)
        runs = len(search["runs"]) + 1  # the children and the search's parent run
        page.get_by_text(f"{runs} matching runs").wait_for(timeout=60_000)
        parent = search["client"].get_run(search["tracker"].parent_run_id).info.run_name
        page.get_by_text(parent).first.wait_for(timeout=10_000)
        page.screenshot(path=str(tmp_path / "mlflow-runs.png"))
        # a dashboard built for this UI: its "Open the run in MLflow" link opens the run's page
        page_file = tmp_path / "dashboard.html"
        write_dashboard(EXPERIMENT, page_file, search["store"], ui_url=base)
        run = _finished(search)[0]
        page.goto(f"{page_file.as_uri()}#run={run.info.run_id}")
        with page.context.expect_page() as opened:
            page.click("#detail a.mlflow-link")
        run_page = opened.value
        assert run_page.url == f"{base}/#/experiments/{exp}/runs/{run.info.run_id}"
        run_page.get_by_text(run.info.run_name).first.wait_for(timeout=60_000)
        run_page.get_by_text("val_accuracy").first.wait_for(timeout=30_000)
        run_page.screenshot(path=str(tmp_path / "mlflow-run.png"))
    finally:
        for open_page in page.context.pages:
            open_page.close()
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGTERM)
            try:
                ui.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(ui.pid, signal.SIGKILL)
                ui.wait()
        ui.stdout.close()


def _goto_when_up(page, url: str, ui: subprocess.Popen) -> None:
    """The server takes seconds to start; a refused connection means not yet."""
    deadline = time.monotonic() + 90
    while True:
        try:
            page.goto(url, timeout=10_000)
            return
        except sync_api.Error:
            assert ui.poll() is None, "archsearch ui exited"
            assert time.monotonic() < deadline, "the MLflow UI did not start in 90 s"
            time.sleep(0.5)


def _wait_until(page, expression: str, timeout: float = 5) -> None:
    """Poll from Python: Playwright's wait_for_function polls with eval inside the page, which
    the dashboard's Content Security Policy (no 'unsafe-eval') refuses whenever the condition
    is not already true at the first look."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"still false after {timeout} s: {expression}"
        time.sleep(0.05)
