"""A model of the user's own, named by import path, started from trained weights: through
``archsearch train``, a space file's pre-flight report, and one-line errors for what a user
gets wrong (exit code 2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from archsearch.cli import main
from archsearch.config import TrialConfig
from archsearch.errors import ConfigError
from archsearch.models import create_model, get_model_info, load_dense_weights
from archsearch.pruning.flops import count_flops
from archsearch.space import SpaceError, load_spec
from archsearch.subnetwork import load_subnetwork
from archsearch.trial import build_model, load_data, measure_reference

#: what a user writes in a module of their own, next to where they run archsearch
USER_MODULE = """\
import torch
from torch import nn


def build_net(input_shape, num_classes, width=8):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )


def positional(shape, classes, *, hidden=16):
    return nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], hidden),
                         nn.ReLU(), nn.Linear(hidden, classes))


def anything(input_shape, num_classes, **options):
    assert options == {"colour": "red"}
    return build_net(input_shape, num_classes)


def needs_depth(input_shape, num_classes, depth):
    return build_net(input_shape, num_classes)


def one_argument(size):
    return nn.Linear(size, 2)


def broken(input_shape, num_classes):
    raise ValueError("width must be even")


class Net(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.embed = nn.Embedding(3, 4)  # holds weights, but runs no FLOPs fvcore counts
        self.unused = nn.Linear(3, 3)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class TiedHead(nn.Module):
    \"\"\"``skip``'s outputs are added to the classifier's: they are classes, never pruned.\"\"\"

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.body = nn.Conv2d(input_shape[0], 8, 3, padding=1)
        self.skip = nn.Conv2d(8, num_classes, 3, padding=1)
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x):
        h = self.body(x)
        return (self.head(h) + self.skip(h)).mean((2, 3))


def not_a_module(input_shape, num_classes):
    return {"layers": 3}


def seven_scores(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 7))


def crashes(input_shape, num_classes):
    return nn.Sequential(nn.Linear(5, num_classes))
"""

SHAPE = (1, 8, 8)
CLASSES = 4
DATA = ["--data", "synthetic", "--data-option", "input_shape=[1,8,8]"]
DATA += ["--data-option", "n_samples=256", "--data-option", f"num_classes={CLASSES}"]
QUICK = ["--epochs", "1", "--finetune-epochs", "0", "--batch-size", "64", "--quiet"]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding ``mynets.py``, made the working folder, as a user runs archsearch."""
    (tmp_path / "mynets.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # import_callable adds the working folder
    monkeypatch.delitem(sys.modules, "mynets", raising=False)
    yield tmp_path
    sys.modules.pop("mynets", None)


def _weights(path: Path, width: int = 4, classes: int = CLASSES, seed: int = 1) -> Path:
    """A state dict of build_net, saved as the file's suffix says."""
    torch.manual_seed(seed)
    state = create_model("mynets:build_net", SHAPE, classes, width=width).state_dict()
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state, "epoch": 3}, path)  # a checkpoint holding one
    return path


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err


# -- the model by import path ---------------------------------------------------------------


def test_train_prunes_a_user_model_and_its_subnetwork_rebuilds(project: Path, capsys) -> None:
    out = project / "trial"
    argv = ["train", "--model", "mynets:build_net", "--model-option", "width=4", *DATA]
    assert main([*argv, *QUICK, "--granularity", "channel", "--out", str(out)]) == 0
    assert "kept" in capsys.readouterr().out
    described = json.loads((out / "subnetwork.json").read_text())
    assert described["model"]["name"] == "mynets:build_net"
    assert described["model"]["options"] == {"width": 4}
    rebuilt = load_subnetwork(out).eval()
    with torch.no_grad():
        assert rebuilt(torch.zeros(3, *SHAPE)).shape == (3, CLASSES)


def test_the_signature_says_how_the_builder_is_called(project: Path) -> None:
    assert create_model("mynets:positional", SHAPE, 3, hidden=5)[1].out_features == 5
    assert create_model("mynets:Net", SHAPE, 3).fc.out_features == 3  # num_classes by name
    create_model("mynets:anything", SHAPE, 3, colour="red")  # **options take any option
    assert get_model_info("mynets:build_net").option_defaults() == {"width": 8}
    with pytest.raises(ConfigError, match="has no option 'depth'; its options are: width"):
        create_model("mynets:build_net", SHAPE, 3, depth=2)
    with pytest.raises(ConfigError, match="needs option 'depth'"):
        create_model("mynets:needs_depth", SHAPE, 3)
    with pytest.raises(ConfigError, match="cannot tell whether its parameter 'size'"):
        create_model("mynets:one_argument", SHAPE, 3)
    with pytest.raises(ConfigError, match="building it raised ValueError: width must be even"):
        create_model("mynets:broken", SHAPE, 3)


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ("nowhere_to_be_found:build", "cannot import module 'nowhere_to_be_found'"),
        ("mynets:missing", "module 'mynets' has no 'missing'"),
        ("mynets:not_a_module", "returned a dict, not a torch.nn.Module"),
        (
            "mynets:seven_scores",
            "returns shape (2, 7) for a batch of 2 inputs of shape (1, 8, 8); expected (2, 4): "
            "its last layer must give one score per class",
        ),
        ("mynets:crashes", "fails on a batch of 2 inputs of shape (1, 8, 8): RuntimeError"),
    ],
)
def test_a_bad_user_model_is_one_line_and_exit_2(project: Path, capsys, model, needle) -> None:
    err = _error(["train", "--model", model, *DATA, *QUICK, "--out", "t"], capsys)
    assert err.startswith("archsearch train: error: ")
    assert needle in err


# -- trained weights ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_training_starts_from_the_init_weights(
    project: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """Exact: the model gating sees (traced right after the build) holds the file's weights."""
    import archsearch.trial

    path = _weights(project / f"dense{suffix}")
    expected = load_dense_state(path)
    seen = {}
    real = archsearch.trial.layer_geometry

    def spy(model, shape):
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, shape)

    monkeypatch.setattr(archsearch.trial, "layer_geometry", spy)
    argv = ["train", "--model", "mynets:build_net", "--model-option", "width=4", *DATA]
    assert main([*argv, *QUICK, "--init-weights", str(path), "--out", "t"]) == 0
    assert seen.keys() == expected.keys()
    assert all(torch.equal(seen[k], expected[k]) for k in expected)


def load_dense_state(path: Path) -> dict[str, torch.Tensor]:
    model = create_model("mynets:build_net", SHAPE, CLASSES, width=4)
    load_dense_weights(model, path, "mynets:build_net")
    return model.state_dict()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda d: _weights(d / "w.pt", width=6), "shape: 0.weight is (6, 1, 3, 3) in the file"),
        (lambda d: _weights(d / "w.safetensors", classes=3), "7.weight is (3, 8) in the file"),
        (lambda d: _other_network(d / "w.pt"), "does not fit this model (missing: 0.weight"),
        (lambda d: d / "nowhere.pt", "nowhere.pt' does not exist"),
        (lambda d: _whole_module(d / "module.pt"), "cannot be read as weights"),
    ],
)
def test_weights_that_do_not_fit_are_one_line(project: Path, capsys, make, needle) -> None:
    path = make(project)
    argv = ["train", "--model", "mynets:build_net", "--model-option", "width=4", *DATA]
    err = _error([*argv, *QUICK, "--init-weights", str(path), "--out", "t"], capsys)
    assert needle in err


def _other_network(path: Path) -> Path:
    torch.save(create_model("mynets:positional", SHAPE, CLASSES).state_dict(), path)
    return path


def _whole_module(path: Path) -> Path:
    torch.save(create_model("mynets:build_net", SHAPE, CLASSES, width=4), path)
    return path


def test_measure_reference_reports_the_loaded_dense_network(project: Path) -> None:
    config = TrialConfig(
        model="mynets:positional",
        data="synthetic",
        data_options={"input_shape": list(SHAPE), "n_samples": 256, "num_classes": CLASSES},
        batch_size=64,
    )
    data = load_data(config)
    trained = _train_dense(build_model(config, SHAPE, CLASSES), data)
    save_file(trained.state_dict(), str(project / "dense.safetensors"))
    loaded = TrialConfig(**{**config.to_dict(), "init_weights": str(project / "dense.safetensors")})
    reference = measure_reference(loaded, data)
    assert set(reference) == {"val_accuracy", "test_accuracy", "flops"}
    assert reference["val_accuracy"] > 0.9  # trained: the synthetic classes are well apart
    assert reference["flops"] == count_flops(trained, SHAPE).total
    untrained = measure_reference(config, data)
    assert reference["val_accuracy"] > untrained["val_accuracy"]


def _train_dense(model: torch.nn.Module, data) -> torch.nn.Module:
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(30):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(data.train_x), data.train_y).backward()
        optimiser.step()
    return model.eval()


# -- the space file and its pre-flight report ---------------------------------------------


def _space(project: Path, model: str, **extra) -> Path:
    raw = {
        "name": "mine",
        "model": {"name": model, "options": {"width": 4}}
        if "build_net" in model
        else {"name": model},
        "data": {
            "name": "synthetic",
            "options": {"input_shape": list(SHAPE), "n_samples": 64, "num_classes": CLASSES},
        },
        "space": {"gate": ["hard_concrete"], "granularity": ["weight", "channel"]},
        **extra,
    }
    path = project / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_space_file_takes_a_user_model_and_its_weights(project: Path) -> None:
    _weights(project / "dense.safetensors")
    spec = load_spec(_space(project, "mynets:build_net", init={"weights": "dense.safetensors"}))
    assert spec.base.init_weights == str(project / "dense.safetensors")  # absolute, once
    report = "\n".join(spec.preflight)
    assert "weight: 3 layers, 356 weights" in report
    assert "channel: 2 groups, 12 channels" in report
    assert (
        f"{count_flops(create_model('mynets:build_net', SHAPE, 4, width=4), SHAPE).total:,}"
        in (spec.preflight[0])
    )
    assert f"trained weights in {project / 'dense.safetensors'}" in report
    assert "preflight" not in json.dumps(spec.describe())  # not in the resume fingerprint


def test_the_report_names_layers_left_out(project: Path) -> None:
    spec = load_spec(_space(project, "mynets:TiedHead"))
    assert any("layer 'skip' (Conv2d) is not gated" in line for line in spec.preflight)
    spec = load_spec(_space(project, "mynets:Net", space={"granularity": ["weight"]}))
    report = "\n".join(spec.preflight)
    assert "layer 'unused' (Linear) does not run on an input" in report
    assert "layer 'embed' (Embedding): fvcore counts no FLOPs" in report


@pytest.mark.parametrize(
    ("model", "extra", "message"),
    [
        ("nowhere_to_be_found:build", {}, "space.yaml: model.name: model 'nowhere"),
        ("mynets:seven_scores", {}, "space.yaml: model.name: model 'mynets:seven_scores' returns"),
        ("mynets:build_net", {"init": {"weights": "no.pt"}}, "space.yaml: init.weights: model"),
        ("mynets:build_net", {"init": {"weights": 3}}, "space.yaml: init.weights: expected a"),
        ("mynets:build_net", {"init": {"file": "w.pt"}}, "space.yaml: init.file: unknown key"),
        ("mynets:build_net", {"train": {"init_weights": "w.pt"}}, "train.init_weights: unknown"),
    ],
)
def test_space_file_mistakes_name_their_key(project: Path, model, extra, message) -> None:
    with pytest.raises(SpaceError) as caught:
        load_spec(_space(project, model, **extra))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_space_carries_the_preflight_report(project: Path) -> None:
    """The lines ``archsearch search`` prints under its banner, before the first trial."""
    spec = load_spec(_space(project, "mynets:build_net"))
    assert "channel: 2 groups, 12 channels" in spec.preflight


def _error_lines(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err
