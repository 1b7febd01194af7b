"""``--time-budget 30m`` (``time_budget`` in the file): the search ends cleanly when the time is
up: running trials stopped and logged as stopped, the rest never started, the front logged,
exit 0 with one line saying the budget ended it. Bad values are one line and exit code 2.
"""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import pytest
from conftest import run_cli_subprocess, tiny_space, write_space

from archsearch.cli import main
from archsearch.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("90s", 90), ("1.5h", 5400), ("45", 45), (" 2m ", 120), (600, 600)],
)
def test_durations_take_s_m_h_suffixes(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "m", "-3m", "0", "30 min", "", "1e3"])
def test_a_bad_duration_says_what_a_good_one_looks_like(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected a duration"):
        parse_duration(text)


def test_durations_print_short() -> None:
    assert [format_duration(s) for s in (1800, 5400, 45, 3725)] == ["30m", "1h30m", "45s", "1h2m5s"]


def test_bad_flag_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    path = write_space(tmp_path, tiny_space())
    with pytest.raises(SystemExit) as caught:  # argparse's own exit, after its one line
        main(["search", str(path), "--time-budget", "soon"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--time-budget: expected a duration" in err
    assert "'soon'" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_bad_file_value_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    path = write_space(tmp_path, tiny_space(time_budget="half an hour"))
    assert main(["search", str(path), "--storage", str(tmp_path / "ray")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"{path}: time_budget: expected a duration such as 30m" in err


BUDGET_S = 40
SPACE = tiny_space(
    "budgeted",
    trials=30,  # far more than fit in the budget
    data={"name": "synthetic", "options": {"n_samples": 2048}},
    # no trial finishes in the budget: with short trials the budget could end while the next
    # ones were still starting up, with no epoch to stop at (a CI machine did just that)
    train={"epochs": 5000, "finetune_epochs": 0, "batch_size": 64, "gate_lr": 0.1},
    time_budget="1h",  # the flag wins over the file
)


def test_the_budget_ends_the_search_cleanly(tmp_path: Path, monkeypatch, capsys) -> None:
    write_space(tmp_path, SPACE)
    started = time.monotonic()
    done = run_cli_subprocess(tmp_path, "search", "space.yaml", "--time-budget", f"{BUDGET_S}s")
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert elapsed < BUDGET_S + 60  # the end: stopping, logging the front and the dashboard

    lines = [line for line in done.stderr.splitlines() if "time budget of" in line]
    assert len(lines) == 1 and lines[0].startswith(f"the time budget of {BUDGET_S}s ended")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("budgeted")
    every = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in every if r.data.tags.get("archsearch.parent") == "true"]
    children = [r for r in every if "archsearch.trial_id" in r.data.tags]
    assert parent.info.status == "FINISHED"
    assert {"pareto.csv", "dashboard.html"} <= {
        a.path for a in client.list_artifacts(parent.info.run_id)
    }
    stopped = [r for r in children if r.info.status == "KILLED"]
    assert stopped, "the trials running when the time was up are logged as stopped"
    for run in stopped:
        assert run.data.tags["archsearch.stopped_by"] == "time budget"
        assert int(run.data.tags["archsearch.stopped_at_epoch"]) >= 1
        assert run.data.tags["archsearch.pareto"] == "false"
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert not finished and len(stopped) == len(children) <= 2  # 2 at a time, none ended
    ran = len(children)
    assert (
        f"{ran} of 30 trials ran ({len(stopped)} of them stopped early), {30 - ran} never"
        in (lines[0])
    )

    monkeypatch.chdir(tmp_path)  # nothing is left to resume: one line, before Ray starts
    assert main(["search", "space.yaml", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ended on its time budget" in err
