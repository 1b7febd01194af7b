"""The command line as a user meets it: output, files, and one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archsearch.cli import main
from archsearch.gates import list_gates

TINY = ["--model", "mlp", "--model-option", "hidden=[32,16]", "--data", "digits", "--quiet"]


def test_gates_lists_every_method_with_a_description(capsys) -> None:
    assert main(["gates"]) == 0
    out = capsys.readouterr().out
    for name in list_gates():
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert len(line.split(None, 1)[1]) > 20  # a real description follows the name


def test_train_writes_files_and_reports_the_subnetwork(tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "trial"
    argv = [
        "train",
        *TINY,
        "--gate",
        "hard_concrete",
        "--granularity",
        "neuron",
        "--lambda",
        "0.05",
        "--epochs",
        "2",
        "--finetune-epochs",
        "1",
        "--out",
        str(out_dir),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out_dir / "metrics.json").read_text())
    subnetwork = json.loads((out_dir / "subnetwork.json").read_text())
    assert (out_dir / "weights.safetensors").stat().st_size > 0
    assert f"{metrics['test_accuracy']:.4f}" in printed
    assert f"{metrics['flops']:,}" in printed
    assert f"kept           {subnetwork['architecture']}" in printed
    assert subnetwork["architecture"].startswith("64-") and subnetwork["architecture"].endswith(
        "-10"
    )


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--gate", "l1"], "unknown gate 'l1'"),
        (["--granularity", "channel"], "granularity 'channel'"),
        (["--lambda", "-0.5"], "penalty_lambda"),
        (["--data", "mnist", "--data-root", "/nonexistent/mnist"], "/nonexistent/mnist"),
        (["--epochs", "many"], "--epochs"),
        (["--model-option", "hidden"], "KEY=VALUE"),
    ],
    ids=[
        "unknown-gate",
        "granularity-model-lacks",
        "negative-lambda",
        "missing-data",
        "bad-int",
        "bad-option",
    ],
)
def test_bad_input_is_one_line_and_exit_2(flags, needle, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "never"
    argv = ["train", *TINY, "--epochs", "1", *flags, "--out", str(out_dir)]
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert needle in err
    assert "Traceback" not in err
    assert not out_dir.exists()  # nothing half-written


def _exit_code(argv: list[str]) -> int:
    """main()'s return code, or argparse's exit code for flags it rejects itself."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)
