"""Kill a search's driver once a trial reached MLflow, then --resume it: the search must end
with exactly the requested trials in MLflow, under the same parent run, none logged twice.

Ctrl-C (SIGINT) is the polite way out: Ray saves its state and the command says how to
resume. SIGKILL is the rude one (an OOM killer, a lost SSH session): the state Ray saved last
must be enough.
"""

from __future__ import annotations

import collections
import json
import os
import signal
from pathlib import Path

import mlflow
import pytest
from conftest import kill_group, start_cli, tiny_space, wait_for_log, write_space

TRIALS = 6  # room for the kill to land before the end even on an idle machine

SPACE = tiny_space(
    "resumable",
    model={"name": "mlp", "options": {"hidden": [64]}},
    # big enough that a trial takes a couple of seconds: time to interrupt between trials
    data={"name": "synthetic", "options": {"n_samples": 4096}},
    trials=TRIALS,
    train={"epochs": 40, "finetune_epochs": 0, "batch_size": 64, "lr": 0.01, "gate_lr": 0.1},
    # one study per granularity: its studies and its turn survive the kill too
    sampler={"name": "random", "seed": 0, "stratify": "granularity"},
    space={
        "gate": ["hard_concrete", "arm"],
        "granularity": ["neuron", "weight"],
        "penalty.lambda": {"loguniform": [0.01, 1.0]},
    },
)


def runs(folder: Path) -> tuple[list, list]:
    client = mlflow.MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("resumable")
    every = client.search_runs([experiment.experiment_id])
    parents = [r for r in every if r.data.tags.get("archsearch.parent") == "true"]
    children = [r for r in every if "archsearch.trial_id" in r.data.tags]
    return parents, children


def saved_trial_ids(folder: Path) -> set[str]:
    """The trials Ray's last saved experiment state knows."""
    (state,) = (folder / "ray_results" / "resumable").glob("experiment_state-*.json")
    return {json.loads(data)["trial_id"] for data, _ in json.loads(state.read_text())["trial_data"]}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_killed_search_resumes_to_exactly_the_requested_trials(
    tmp_path: Path, sig: signal.Signals
) -> None:
    """Ctrl-C saves Ray's state on the way out. kill -9 leaves what Ray saved last, and Ray
    saves every 10 s or more: here only once, at the start, so MLflow holds an ended trial
    that Ray's state never saw (it saved the first two, the ones it started with). The
    resumed search counts it instead of running a replacement: exactly the requested
    trials, none twice."""
    write_space(tmp_path, SPACE)
    rude = sig == signal.SIGKILL
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "3600"} if rude else None
    first, log = start_cli(tmp_path, "search", "space.yaml", env=env)
    try:
        wait_for_log(log, rf"^\[{3 if rude else 1}/{TRIALS} done", first, timeout=300)
        first.send_signal(sig)
        code = first.wait(timeout=120)
    finally:
        kill_group(first)
    parents, children = runs(tmp_path)
    logged = {r.data.tags["archsearch.trial_id"] for r in children}
    assert 1 <= len(logged) < TRIALS, "the kill must land after one trial and before the end"
    assert len(parents) == 1
    if sig == signal.SIGINT:
        assert code == 130
        assert "archsearch search space.yaml --resume" in log.read_text()
        assert parents[0].info.status == "KILLED"
    else:
        assert logged - saved_trial_ids(tmp_path), "the kill must land before Ray saved them"

    second, log = start_cli(tmp_path, "search", "space.yaml", "--resume")
    try:
        assert second.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        kill_group(second)
    assert "resuming search 'resumable'" in log.read_text()
    parents_after, children = runs(tmp_path)
    assert [p.info.run_id for p in parents_after] == [parents[0].info.run_id]
    assert parents_after[0].info.status == "FINISHED"
    trial_ids = [r.data.tags["archsearch.trial_id"] for r in children]
    assert len(trial_ids) == TRIALS and len(set(trial_ids)) == TRIALS
    assert logged <= set(trial_ids)
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for r in children)
    if sig == signal.SIGINT:  # the saved searcher knew every trial it had dealt: still in turn
        shares = collections.Counter(r.data.params["granularity"] for r in children)
        assert shares == {"neuron": TRIALS // 2, "weight": TRIALS // 2}


def test_resume_refuses_a_changed_search(tmp_path: Path, monkeypatch, capsys) -> None:
    """Checked before Ray starts, from the settings a started search leaves beside its state."""
    from archsearch.cli import main

    monkeypatch.chdir(tmp_path)
    write_space(tmp_path, SPACE)
    state = tmp_path / "ray_results" / "resumable"
    state.mkdir(parents=True)
    (state / "tuner.pkl").write_bytes(b"")  # what Ray looks for in a restorable experiment
    (state / "archsearch.json").write_text(
        '{"trials": 4, "concurrency": 2, "seed": 0, "tracking_uri": "sqlite:///x.db", '
        '"fingerprint": "not this space", "space_file": "space.yaml"}'
    )
    assert main(["search", "space.yaml", "--resume", "--trials", "8"]) == 2
    assert "--trials 8 differs from the 4 this search started with" in capsys.readouterr().err
    assert main(["search", "space.yaml", "--resume"]) == 2
    assert "space.yaml changed since the search started" in capsys.readouterr().err


def test_a_search_started_on_an_earlier_default_rank_says_which_to_add(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """MOASHA's default rung order changed (nondominated, then hypervolume): a file left as it
    was is not a changed search, and the error names the one line that resumes it."""
    from archsearch.cli import main
    from archsearch.search.resume import fingerprint
    from archsearch.space import load_spec

    monkeypatch.chdir(tmp_path)
    train = {**SPACE["train"], "epochs": 3}
    then = {**SPACE, "train": train, "scheduler": {"name": "moasha", "rank": "nondominated"}}
    started = fingerprint(load_spec(write_space(tmp_path, then)))
    write_space(tmp_path, {**then, "scheduler": {"name": "moasha"}})
    state = tmp_path / "ray_results" / "resumable"
    state.mkdir(parents=True)
    (state / "tuner.pkl").write_bytes(b"")
    settings = {"trials": TRIALS, "concurrency": 2, "seed": 0, "tracking_uri": "sqlite:///x.db"}
    (state / "archsearch.json").write_text(
        json.dumps({**settings, "fingerprint": started, "space_file": "space.yaml"})
    )
    assert main(["search", "space.yaml", "--resume"]) == 2
    assert (
        "this search started when MOASHA's default rank was nondominated; add rank: "
        "nondominated to its scheduler" in capsys.readouterr().err
    )
