"""The chosen model by budget: ``archsearch pareto NAME --max-flops-ratio R --min-accuracy A``
lists the front members that fit, best first, and ``archsearch export NAME`` with the same
flags writes the first of them.

One real SQLite store per module, written by ``SearchTracker`` as a search writes it. Each
trial's metrics are set by hand, so the front and what fits each budget are known; the two
trials that get exported carry the files of two real (different) pruned trials, so the written
model shows which run was chosen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archsearch.cli import main
from archsearch.config import TrialConfig
from archsearch.tracking import SearchTracker
from archsearch.trial import run_trial

EXPERIMENT = "budget"
DENSE = 100_000
#: trial id -> (granularity, validation accuracy, FLOPs ratio, which real trial's files)
TRIALS = {
    "t_wide": ("neuron", 0.95, 0.60, "wide"),
    "t_mid": ("neuron", 0.90, 0.20, None),
    "t_small": ("neuron", 0.86, 0.04, "small"),
    "t_weight": ("weight", 0.70, 0.01, None),
    "t_beaten": ("neuron", 0.80, 0.045, None),  # fits 5%, but t_small beats it: off the front
    "t_tiny": ("weight", 0.30, 0.003, None),
    "t_weight_beaten": ("weight", 0.84, 0.30, None),
}
BASE = {
    "model": "mlp",
    "model_options": {"hidden": [32, 16]},
    "data": "synthetic",
    "data_options": {"n_samples": 256},
    "granularity": "neuron",
    "gate": "hard_concrete",
    "gate_lr": 0.1,
    "epochs": 1,
    "finetune_epochs": 0,
    "device": "cpu",
}
REAL = {
    "wide": TrialConfig(**BASE, penalty_lambda=0.0),
    "small": TrialConfig(**BASE, penalty_lambda=1.0, gate_options={"init_drop_rate": 0.9}),
}


def _flops(folder: Path) -> int:
    return json.loads((folder / "subnetwork.json").read_text())["flops"]["total"]


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("budget")
    folders = {}
    for name, config in REAL.items():
        run_trial(config, out_dir=root / name)
        folders[name] = root / name
    assert _flops(folders["wide"]) != _flops(folders["small"]), "the tests need two networks"
    store = f"sqlite:///{root / 'mlflow.db'}"
    tracker = SearchTracker(EXPERIMENT, tracking_uri=store)
    runs = {}
    for trial_id, (granularity, accuracy, ratio, files) in TRIALS.items():
        metrics = {
            "val_accuracy": accuracy,
            "test_accuracy": accuracy - 0.01,
            "flops": ratio * DENSE,
            "flops_ratio": ratio,
            "dense_flops": DENSE,
        }
        params = {"gate": "arm", "granularity": granularity, "penalty.lambda": 0.1}
        folder = folders[files] if files else None
        runs[trial_id] = tracker.log_trial(trial_id, params, metrics=metrics, trial_dir=folder)
    tracker.finish(log_front_models=False)
    return {"store": store, "runs": runs, "folders": folders, "front": tracker.front()}


def _brute_best(max_ratio: float | None, min_accuracy: float | None) -> list[str]:
    """Trial ids of the front members that fit, best first, from ``TRIALS`` alone."""

    def beaten(a: str) -> bool:
        _, acc, ratio, _ = TRIALS[a]
        return any(
            b != a and acc2 >= acc and r2 <= ratio and (acc2 > acc or r2 < ratio)
            for b, (_, acc2, r2, _) in TRIALS.items()
        )

    front = [t for t in TRIALS if not beaten(t)]
    fits = [
        t
        for t in front
        if (max_ratio is None or TRIALS[t][2] <= max_ratio)
        and (min_accuracy is None or TRIALS[t][1] >= min_accuracy)
    ]
    return sorted(fits, key=lambda t: -TRIALS[t][1])


def _pareto_json(search, capsys, *flags: str) -> list[dict]:
    assert main(["pareto", EXPERIMENT, "--json", *flags, "--tracking-uri", search["store"]]) == 0
    return json.loads(capsys.readouterr().out)


def _one_line_error(argv: list[str], capsys) -> str:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("flags", "max_ratio", "min_accuracy"),
    [
        (["--max-flops-ratio", "0.05"], 0.05, None),
        (["--max-flops-ratio", "5%"], 0.05, None),
        (["--min-accuracy", "0.85"], None, 0.85),
        (["--max-flops-ratio", "0.05", "--min-accuracy", "0.8"], 0.05, 0.8),
        (["--max-flops-ratio", "0.25", "--min-accuracy", "0.5"], 0.25, 0.5),
    ],
)
def test_pareto_lists_the_front_members_that_fit_best_first(
    search, capsys, flags, max_ratio, min_accuracy
) -> None:
    rows = _pareto_json(search, capsys, *flags)
    assert [r["trial_id"] for r in rows] == _brute_best(max_ratio, min_accuracy)
    assert "t_beaten" not in {r["trial_id"] for r in rows}  # fits 5%, but is off the front


def test_the_first_row_is_the_best_of_every_finished_trial_that_fits(search, capsys) -> None:
    """Listing only the front loses nothing: the best model within a budget is on it."""
    for ratio in (0.004, 0.01, 0.044, 0.05, 0.3, 1.0):
        best = max(
            (t for t, (_, _, r, _) in TRIALS.items() if r <= ratio), key=lambda t: TRIALS[t][1]
        )
        rows = _pareto_json(search, capsys, "--max-flops-ratio", str(ratio))
        assert rows[0]["trial_id"] == best


def test_the_table_says_what_fits_and_lists_it_best_first(search, capsys) -> None:
    argv = ["pareto", EXPERIMENT, "--max-flops-ratio", "0.05", "--tracking-uri", search["store"]]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "3 of 5 front members fit FLOPs <= 5% of dense, best first"
    assert lines[1].startswith("run")
    runs = search["runs"]
    assert [line.split()[0] for line in lines[2:5]] == [
        runs[t][:8] for t in ("t_small", "t_weight", "t_tiny")
    ]


def test_nothing_fits_is_one_line_and_exit_2(search, capsys) -> None:
    err = _one_line_error(
        ["pareto", EXPERIMENT, "--max-flops-ratio", "0.002", "--min-accuracy", "0.9",
         "--tracking-uri", search["store"]],
        capsys,
    )  # fmt: skip
    assert "FLOPs <= 0.2% of dense and val accuracy >= 0.9" in err
    assert "0.3%-60% of dense" in err  # what the front offers instead


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-flops-ratio", "0"],
        ["--max-flops-ratio", "five"],
        ["--max-flops-ratio", "150%"],
        ["--min-accuracy", "1.5"],
    ],
)
def test_a_bad_budget_is_one_line_and_exit_2(search, capsys, flags) -> None:
    err = _one_line_error(["pareto", EXPERIMENT, *flags, "--tracking-uri", search["store"]], capsys)
    assert flags[0] in err


# -- export NAME --max-flops-ratio ---------------------------------------------------------------


def test_export_writes_the_best_model_that_fits(search, tmp_path, capsys) -> None:
    output = tmp_path / "m.onnx"
    argv = ["export", EXPERIMENT, "--max-flops-ratio", "0.05", "--format", "onnx", "-o",
            str(output), "--tracking-uri", search["store"]]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"chose          run {search['runs']['t_small']} ")
    assert output.is_file()
    flops = _flops(search["folders"]["small"])  # the chosen run's network, not another's
    assert f"FLOPs          {flops:,}" in out


def test_export_by_accuracy_alone_takes_the_most_accurate(search, tmp_path, capsys) -> None:
    output = tmp_path / "m.pt"
    argv = ["export", EXPERIMENT, "--min-accuracy", "0.95", "--format", "torchscript", "-o",
            str(output), "--tracking-uri", search["store"]]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert search["runs"]["t_wide"] in out.splitlines()[0]
    assert f"FLOPs          {_flops(search['folders']['wide']):,}" in out


def test_export_when_nothing_fits_writes_nothing(search, tmp_path, capsys) -> None:
    output = tmp_path / "m.onnx"
    err = _one_line_error(
        ["export", EXPERIMENT, "--max-flops-ratio", "0.001", "--format", "onnx", "-o",
         str(output), "--tracking-uri", search["store"]],
        capsys,
    )  # fmt: skip
    assert "FLOPs <= 0.1% of dense" in err and "raise --max-flops-ratio" in err
    assert list(tmp_path.iterdir()) == []


def test_export_with_a_budget_needs_an_experiment(search, tmp_path, capsys) -> None:
    folder = search["folders"]["small"]
    err = _one_line_error(
        ["export", str(folder), "--max-flops-ratio", "0.05", "--format", "onnx", "-o",
         str(tmp_path / "m.onnx"), "--tracking-uri", search["store"]],
        capsys,
    )  # fmt: skip
    assert "is a folder" in err and "experiment name" in err
    err = _one_line_error(
        ["export", "no-such-space", "--max-flops-ratio", "0.05", "--format", "onnx", "-o",
         str(tmp_path / "m.onnx"), "--tracking-uri", search["store"]],
        capsys,
    )  # fmt: skip
    assert "no experiment named 'no-such-space'" in err and EXPERIMENT in err
    assert list(tmp_path.iterdir()) == []


def test_an_experiment_without_a_budget_says_how_to_choose(search, tmp_path, capsys) -> None:
    output = tmp_path / "m.onnx"
    err = _one_line_error(
        ["export", EXPERIMENT, "--format", "onnx", "-o", str(output),
         "--tracking-uri", search["store"]],
        capsys,
    )  # fmt: skip
    assert f"'{EXPERIMENT}' is neither a directory nor a run" in err
    assert "an experiment name with --max-flops-ratio or --min-accuracy" in err
    assert not output.exists()
