"""Bad input, all of it: every malformed input a user can give any command is one line on
stderr naming the problem, exit code 2, no traceback, and nothing left behind (no store, no
Ray folder, no half-written output).

Each case runs in an empty folder of its own; the folder's contents are compared before and
after, so a search refused before Ray must not leave mlflow.db or ray_results there.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from archsearch.cli import main

SPACE = """\
name: bad-input
model: {name: mlp, options: {hidden: [16]}}
data: {name: digits}
trials: 2
concurrency: 1
train: {epochs: 1, finetune_epochs: 1}
space:
  gate: [hard_concrete]
  penalty.lambda: {loguniform: [1e-3, 1]}
"""

UNKNOWN_RUN = "0123456789abcdef0123456789abcdef"


def _edit(old: str, new: str) -> str:
    assert old in SPACE, old
    return SPACE.replace(old, new)


@dataclass(frozen=True)
class Case:
    """``argv`` may hold ``{space}``, the path of a file holding ``space`` (text or bytes)."""

    argv: list[str]
    needle: str
    space: str | bytes | None = None
    files: dict[str, str] = field(default_factory=dict)
    store: bool = False  # run in a folder holding an MLflow store (./mlflow.db) with no searches


def _search(space: str | bytes, needle: str, *flags: str) -> Case:
    return Case(["search", "{space}", *flags], needle, space)


CASES: dict[str, Case] = {
    # -- space files: wrong types ---------------------------------------------------------
    "space-trials-not-int": _search(_edit("trials: 2", "trials: many"), "trials"),
    "space-concurrency-float": _search(_edit("concurrency: 1", "concurrency: 1.5"), "concurrency"),
    "space-model-number": _search(
        _edit("model: {name: mlp, options: {hidden: [16]}}", "model: 3"), "model"
    ),
    "space-space-list": _search(SPACE.split("space:")[0] + "space: [gate, granularity]\n", "space"),
    "space-epochs-string": _search(_edit("epochs: 1,", "epochs: ten,"), "epochs"),
    "space-val-fraction-string": _search(
        _edit("data: {name: digits}", "data: {name: digits, val_fraction: half}"), "val_fraction"
    ),
    "space-not-a-mapping": _search("- just\n- a list\n", "expected a mapping"),
    # -- space files: unknown keys, empty lists, reversed ranges, what a model lacks ------
    "space-unknown-top-key": _search(SPACE + "trails: 5\n", "trails"),
    "space-unknown-train-key": _search(_edit("epochs: 1,", "epoch: 1,"), "epoch"),
    "space-unknown-parameter": _search(SPACE + "  dropout: [0.1, 0.2]\n", "dropout"),
    "space-empty-choices": _search(_edit("gate: [hard_concrete]", "gate: []"), "empty list"),
    "space-reversed-range": _search(_edit("[1e-3, 1]", "[1, 1e-3]"), "lo < hi"),
    "space-unknown-gate": _search(_edit("[hard_concrete]", "[hard_concrete, l1]"), "l1"),
    "space-granularity-model-lacks": _search(SPACE + "  granularity: [channel]\n", "channel"),
    "space-gate-lacks-option": _search(SPACE + "  hard_concrete.tau: [0.5]\n", "tau"),
    "space-option-of-unsearched-gate": _search(SPACE + "  arm.beta: [0.5]\n", "arm"),
    "space-missing-space-key": _search(SPACE.split("space:")[0], "space"),
    "space-bad-name": _search(_edit("name: bad-input", "name: a/b"), "name"),
    # -- space files that are not YAML at all ---------------------------------------------
    "space-yaml-syntax": _search(_edit("trials: 2", "trials: [2"), "not valid YAML"),
    "space-empty-file": _search("", "expected a mapping"),
    "space-binary-file": _search(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00", "not a text file"),
    "space-nul-bytes": _search(b"name: x\x00\n", "not a text file"),
    "space-missing-file": Case(["search", "nowhere.yaml"], "nowhere.yaml"),
    "space-is-a-folder": Case(["search", "."], "cannot read it"),
    # -- search flags, cluster, store, data -----------------------------------------------
    "search-trials-zero": _search(SPACE, "trials", "--trials", "0"),
    "search-trials-not-int": _search(SPACE, "--trials", "--trials", "lots"),
    "search-unknown-flag": _search(SPACE, "--frobnicate", "--frobnicate"),
    "search-resume-nothing-saved": _search(SPACE, "resume", "--resume"),
    "search-cluster-unreachable": _search(SPACE, "127.0.0.1:1", "--address", "127.0.0.1:1"),
    "search-cluster-malformed": _search(SPACE, "nonsense", "--address", "nonsense"),
    "search-store-unreachable": _search(
        SPACE, "127.0.0.1:1", "--tracking-uri", "http://127.0.0.1:1"
    ),
    "search-data-missing": _search(
        _edit("data: {name: digits}", "data: {name: mnist, root: /nonexistent/mnist}"),
        "/nonexistent/mnist",
    ),
    # -- train ----------------------------------------------------------------------------
    "train-data-root-missing": Case(
        ["train", "--data", "fashion_mnist", "--data-root", "no-such-dir", "--out", "out"],
        "no-such-dir",
    ),
    "train-data-root-empty": Case(
        ["train", "--data", "mnist", "--data-root", "empty", "--out", "out"],
        "empty",
        files={"empty/README": "not IDX files"},
    ),
    "train-data-root-is-a-file": Case(
        ["train", "--data", "imagefolder", "--data-root", "f.txt", "--out", "out"],
        "f.txt",
        files={"f.txt": "not a folder"},
    ),
    "train-unknown-model": Case(["train", "--model", "vgg99", "--out", "out"], "vgg99"),
    "train-negative-epochs": Case(["train", "--epochs", "-1", "--out", "out"], "epochs"),
    # -- read-only commands: store, names, run ids ----------------------------------------
    "pareto-no-store": Case(["pareto", "quickstart"], "no MLflow store"),
    "pareto-store-unreachable": Case(
        ["pareto", "quickstart", "--tracking-uri", "http://127.0.0.1:1"], "127.0.0.1:1"
    ),
    "pareto-csv-and-json": Case(["pareto", "quickstart", "--csv", "--json"], "--json"),
    "dashboard-no-store": Case(["dashboard", "quickstart", "-o", "d.html"], "no MLflow store"),
    "dashboard-store-unreachable": Case(
        ["dashboard", "quickstart", "-o", "d.html", "--tracking-uri", "http://127.0.0.1:1"],
        "127.0.0.1:1",
    ),
    "dashboard-no-output": Case(["dashboard", "quickstart"], "--output"),
    "export-unknown-run-id": Case(
        ["export", UNKNOWN_RUN, "--format", "onnx", "-o", "m.onnx"], "no MLflow store"
    ),
    "export-malformed-run-id": Case(
        ["export", "not-a-run!", "--format", "onnx", "-o", "m.onnx"], "not-a-run!"
    ),
    "export-store-unreachable": Case(
        [
            "export",
            UNKNOWN_RUN,
            "--format",
            "onnx",
            "-o",
            "m.onnx",
            "--tracking-uri",
            "http://127.0.0.1:1",
        ],
        "127.0.0.1:1",
    ),
    "export-unknown-format": Case(
        ["export", UNKNOWN_RUN, "--format", "tflite", "-o", "m"], "tflite"
    ),
    "export-no-output": Case(["export", UNKNOWN_RUN, "--format", "onnx"], "-o"),
    "pareto-unknown-experiment": Case(["pareto", "no-such-search"], "no-such-search", store=True),
    "dashboard-unknown-experiment": Case(
        ["dashboard", "no-such-search", "-o", "d.html"], "no-such-search", store=True
    ),
    "export-unknown-run-id-in-store": Case(
        ["export", UNKNOWN_RUN, "--format", "onnx", "-o", "m.onnx"], UNKNOWN_RUN, store=True
    ),
    "export-malformed-run-id-in-store": Case(
        ["export", "not-a-run!", "--format", "onnx", "-o", "m.onnx"], "not-a-run!", store=True
    ),
    "ui-unknown-experiment": Case(["ui", "no-such-search"], "no-such-search", store=True),
    "ui-no-store": Case(["ui", "quickstart"], "no MLflow store"),
    "ui-store-unreachable": Case(["ui", "--tracking-uri", "http://127.0.0.1:1"], "127.0.0.1:1"),
    "ui-port-not-int": Case(["ui", "--port", "http"], "--port"),
    "gates-extra-argument": Case(["gates", "extra"], "extra"),
    "no-command": Case([], "command"),
    "unknown-command": Case(["serach"], "serach"),
}


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite store with no searches in it, made once and copied for each case."""
    from archsearch.tracking import open_client

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    open_client(f"sqlite:///{path}").search_experiments()
    return path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _exit_code(argv: list[str]) -> int:
    """main()'s return code, or argparse's exit code for flags it rejects itself."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 25
    commands = {case.argv[0] for case in CASES.values() if case.argv}
    assert commands >= {"search", "train", "pareto", "dashboard", "export", "ui", "gates"}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, empty_store: Path
) -> None:
    case = CASES[name]
    if case.store:
        shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = list(case.argv)
    if case.space is not None:
        space = tmp_path / "space.yaml"
        if isinstance(case.space, bytes):
            space.write_bytes(case.space)
        else:
            space.write_text(case.space)
        argv = [str(space) if a == "{space}" else a for a in argv]
    for relative, text in case.files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(text)
    before = _tree(tmp_path)

    code = _exit_code(argv)

    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err)
    assert len(err.splitlines()) == 1, err
    assert case.needle in err, err
    assert "Traceback" not in err + captured.out
    assert _tree(tmp_path) == before  # no store, no ray_results, no half-written output


def test_a_named_data_root_is_used_or_refused_never_replaced(tmp_path: Path, capsys) -> None:
    """Fashion-MNIST has a default location (Debian's package); a root the user names that
    does not exist must not fall back to it."""
    missing = tmp_path / "does-not-exist"
    out = tmp_path / "out"
    argv = ["train", "--data", "fashion_mnist", "--data-root", str(missing), "--out", str(out)]
    assert _exit_code([*argv, "--epochs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err, err
    assert not out.exists() and not missing.exists()


def test_a_named_data_root_without_the_files_is_refused(tmp_path: Path) -> None:
    from archsearch.data import load_dataset
    from archsearch.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError, match=str(tmp_path)) as raised:
        load_dataset("fashion_mnist", root=tmp_path)
    assert "/usr/share/datasets" not in str(raised.value)


@pytest.mark.parametrize(("flags", "host"), [([], "127.0.0.1"), (["--host", "0.0.0.0"], "0.0.0.0")])
def test_ui_listens_on_loopback_unless_told(
    flags: list[str], host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_store: Path
) -> None:
    from archsearch.commands import ui

    served: list[str] = []
    monkeypatch.setattr(ui, "_serve", lambda _uri, bound, _port: served.append(bound) or 0)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
    assert main(["ui", "--port", "0", *flags]) == 0
    assert served == [host]
