"""``archsearch export``: every format round-trips a pruned trial, from a folder or an MLflow run.

The written files are loaded here with each format's own runtime, independently of the
loaders in ``archsearch.export``, and compared with the subnetwork rebuilt from the trial's
files; "smaller" is measured against the same architecture exported with nothing pruned.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from archsearch.cli import main
from archsearch.config import TrialConfig
from archsearch.export import FORMATS, ExportError, ExportFormat, export_subnetwork
from archsearch.models import create_model
from archsearch.pruning.harden import apply_structure
from archsearch.subnetwork import load_subnetwork, rebuild_subnetwork, save_subnetwork
from archsearch.trial import run_trial

#: one epoch, gates started mostly closed and a strong penalty: these prune in a second
PRUNE = {
    "gate": "hard_concrete",
    "gate_options": {"init_drop_rate": 0.9},
    "penalty_lambda": 1.0,
    "gate_lr": 0.1,
    "epochs": 1,
    "finetune_epochs": 0,
    "device": "cpu",
}
TRIALS = {
    "mlp_inputs": TrialConfig(
        model="mlp",
        model_options={"hidden": [32, 16]},
        data="synthetic",
        data_options={"n_samples": 256},
        granularity="neuron",
        gate_inputs=True,
        **PRUNE,
    ),
    "resnet_channels": TrialConfig(
        model="tiny_resnet",
        data="synthetic",
        data_options={"input_shape": [3, 16, 16]},
        granularity="channel",
        **PRUNE,
    ),
}


def _dense_twin(trial: Path, out: Path) -> Path:
    """The trial's architecture with every group kept, as the same two files."""
    description = json.loads((trial / "subnetwork.json").read_text())
    structure = [{**e, "kept": list(range(e["size"]))} for e in description["structure"]]
    spec = description["model"]
    shape = tuple(spec["input_shape"])
    model = create_model(spec["name"], shape, spec["num_classes"], **spec["options"])
    apply_structure(model, shape, structure)
    flops = {**description["flops"], "total": description["flops"]["dense"]}
    save_subnetwork(out, {**description, "structure": structure, "flops": flops}, model)
    return out


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """name -> (pruned trial folder, its dense twin)."""
    root = tmp_path_factory.mktemp("trials")
    made = {}
    for name, config in TRIALS.items():
        result = run_trial(config, out_dir=root / name)
        assert result.metrics["flops_ratio"] < 0.5, f"{name} did not prune; the tests need it"
        made[name] = (root / name, _dense_twin(root / name, root / f"{name}_dense"))
    return made


def _load_written(fmt: str, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (graph_input,) = session.get_inputs()
        assert isinstance(graph_input.shape[0], str)  # a named, dynamic batch axis
        return lambda x: torch.from_numpy(session.run(None, {graph_input.name: x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    if fmt == "pt2":
        return torch.export.load(io.BytesIO(path.read_bytes())).module()
    description = json.loads(path.with_name(f"{path.name}.json").read_text())
    return rebuild_subnetwork(description, path)


def _assert_same_outputs(fmt: str, path: Path, trial: Path) -> None:
    description = json.loads((trial / "subnetwork.json").read_text())
    x = torch.randn(4, *description["model"]["input_shape"])
    with torch.no_grad():
        expected = load_subnetwork(trial)(x)
        got = _load_written(fmt, path)(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-4)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("trial_name", list(TRIALS))
def test_export_round_trip(trial_name: str, fmt: str, trials, tmp_path: Path) -> None:
    trial, dense = trials[trial_name]
    metrics = json.loads((trial / "metrics.json").read_text())
    description = json.loads((trial / "subnetwork.json").read_text())

    report = export_subnetwork(str(trial), fmt, tmp_path / f"model.{fmt}")

    assert report.path == tmp_path / f"model.{fmt}"
    assert report.bytes == report.path.stat().st_size
    assert report.flops == metrics["flops"] and report.params == metrics["params"]
    assert report.input_shape == tuple(description["model"]["input_shape"])
    assert report.max_abs_diff <= 1e-4
    _assert_same_outputs(fmt, report.path, trial)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [report.path.name, *(p.name for p in report.companions)]
    )  # no staging leftovers

    dense_report = export_subnetwork(str(dense), fmt, tmp_path / "dense" / f"model.{fmt}")
    assert report.bytes < dense_report.bytes
    assert report.params < dense_report.params and report.flops < dense_report.flops


def test_safetensors_export_is_self_contained(trials, tmp_path: Path) -> None:
    trial, _ = trials["mlp_inputs"]
    report = export_subnetwork(str(trial), "safetensors", tmp_path / "w.safetensors")
    assert report.companions == (tmp_path / "w.safetensors.json",)
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for path in (report.path, *report.companions):
        shutil.move(path, shipped / path.name)  # away from the trial folder: still rebuilds
    _assert_same_outputs("safetensors", shipped / "w.safetensors", trial)


def test_failed_verification_writes_nothing(trials, tmp_path: Path, monkeypatch) -> None:
    """A format whose file computes something else must not leave that file behind."""
    safetensors = FORMATS["safetensors"]

    def write_perturbed(module, description, path):
        with torch.no_grad():
            list(module.parameters())[-1].add_(1e-2)  # the class scores' bias
        safetensors.write(module, description, path)

    broken = ExportFormat("test", "test", write_perturbed, safetensors.load, safetensors.companions)
    monkeypatch.setitem(FORMATS, "perturbed", broken)
    trial, _ = trials["resnet_channels"]
    with pytest.raises(ExportError, match="differs from the rebuilt subnetwork"):
        export_subnetwork(str(trial), "perturbed", tmp_path / "out" / "w.safetensors")
    assert list((tmp_path / "out").iterdir()) == []


def test_flops_that_do_not_match_the_weights_are_refused(trials, tmp_path: Path) -> None:
    trial, _ = trials["mlp_inputs"]
    copy = shutil.copytree(trial, tmp_path / "trial")
    description = json.loads((copy / "subnetwork.json").read_text())
    description["flops"]["total"] += 1
    (copy / "subnetwork.json").write_text(json.dumps(description))
    with pytest.raises(ExportError, match="FLOPs but the rebuilt module counts"):
        export_subnetwork(str(copy), "onnx", tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


# -- from MLflow -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_store(trials, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real SQLite store: one run holding a trial's two files at its artifact root (as the
    search logs them), one holding only the description (a run that lost its weights)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("export", artifact_location=(root / "art").as_uri())
    trial, _ = trials["resnet_channels"]
    complete = client.create_run(experiment).info.run_id
    for name in ("subnetwork.json", "weights.safetensors"):
        client.log_artifact(complete, str(trial / name))
    partial = client.create_run(experiment).info.run_id
    client.log_artifact(partial, str(trial / "subnetwork.json"))
    return {"uri": uri, "complete": complete, "partial": partial}


def test_export_from_an_mlflow_run(mlflow_store, trials, tmp_path: Path) -> None:
    trial, _ = trials["resnet_channels"]
    report = export_subnetwork(
        mlflow_store["complete"], "onnx", tmp_path / "m.onnx", tracking_uri=mlflow_store["uri"]
    )
    _assert_same_outputs("onnx", report.path, trial)
    assert report.flops == json.loads((trial / "metrics.json").read_text())["flops"]


def test_run_without_weights_names_what_is_missing(mlflow_store, tmp_path: Path) -> None:
    run_id = mlflow_store["partial"]
    with pytest.raises(ExportError, match=rf"run {run_id} .* has no weights\.safetensors"):
        export_subnetwork(run_id, "pt2", tmp_path / "m.pt2", tracking_uri=mlflow_store["uri"])
    assert not (tmp_path / "m.pt2").exists()


def _cli_error(argv: list[str], capsys) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    return err


def test_unknown_run_id_is_one_line(mlflow_store, tmp_path: Path, capsys) -> None:
    missing = "0" * 32
    err = _cli_error(
        ["export", missing, "--format", "onnx", "-o", str(tmp_path / "m.onnx"),
         "--tracking-uri", mlflow_store["uri"]],
        capsys,
    )  # fmt: skip
    assert missing in err and "neither a directory nor a run" in err
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_format_is_one_line_listing_formats(trials, tmp_path: Path, capsys) -> None:
    trial, _ = trials["mlp_inputs"]
    err = _cli_error(
        ["export", str(trial), "--format", "tflite", "-o", str(tmp_path / "m")], capsys
    )
    assert "'tflite'" in err and all(name in err for name in FORMATS)


def test_folder_without_the_files_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "subnetwork.json").write_text("{}")
    output = tmp_path / "m.onnx"
    err = _cli_error(["export", str(tmp_path), "--format", "onnx", "-o", str(output)], capsys)
    assert f"{tmp_path} has no weights.safetensors;" in err
    assert not output.exists()


def test_cli_prints_path_size_flops_params_and_verification(trials, tmp_path, capsys) -> None:
    trial, _ = trials["mlp_inputs"]
    metrics = json.loads((trial / "metrics.json").read_text())
    output = tmp_path / "m.pt"
    assert main(["export", str(trial), "--format", "torchscript", "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert str(output) in out and f"{output.stat().st_size:,} bytes" in out
    assert f"{metrics['flops']:,}" in out and f"{metrics['params']:,}" in out
    assert "torch.jit.load matches" in out


def test_output_suffix_names_the_format_when_format_is_left_out(trials, tmp_path, capsys) -> None:
    trial, _ = trials["mlp_inputs"]
    output = tmp_path / "m.onnx"
    assert main(["export", str(trial), "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert f"{output}  (onnx," in out and "onnxruntime matches" in out
    assert output.read_bytes()[:2] != b"PK"  # an ONNX protobuf, not a TorchScript zip


def test_output_suffix_that_names_no_format_is_one_line(trials, tmp_path, capsys) -> None:
    trial, _ = trials["mlp_inputs"]
    output = tmp_path / "m.bin"
    err = _cli_error(["export", str(trial), "-o", str(output)], capsys)
    assert "'m.bin'" in err and "--format" in err and ".onnx (onnx)" in err
    assert not output.exists()
