"""Models beyond plain logits, and the export of every hardened model (issue 16).

A model that returns auxiliary outputs in training (GoogLeNet, a user's named tuple) trains on
its primary output, hardens, is counted and exports verified; a format that cannot express a
layer is refused in one line naming the formats that can; a model whose state dict needs its
modules' ``_version`` metadata (torchvision's MNASNet) rebuilds from subnetwork.json +
safetensors. The full torchvision zoo is ``benchmarks/zoo.py``.
"""

from __future__ import annotations

import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import GoogLeNetOutputs, InceptionOutputs

from archsearch.cli import main
from archsearch.config import TrialConfig
from archsearch.export import export_subnetwork
from archsearch.models import create_model, primary_output
from archsearch.subnetwork import load_subnetwork
from archsearch.train import _classification_loss
from archsearch.trial import run_trial

USER_MODULE = """
from collections import namedtuple

import torch
from torch import nn

Outputs = namedtuple("Outputs", ["logits", "aux_logits"])


class AuxNet(nn.Module):
    '''Returns (logits, aux_logits) in training, like GoogLeNet; the aux head reads the input,
    which no gate prunes.'''

    def __init__(self, input_shape, num_classes, *, aux_weight=0.0):
        super().__init__()
        c, h, w = input_shape
        self.trunk = nn.Sequential(
            nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8, num_classes)
        self.aux = nn.Linear(c * h * w, num_classes)
        self.aux_loss_weight = aux_weight

    def forward(self, x):
        logits = self.head(self.trunk(x))
        if self.training:
            return Outputs(logits, self.aux(x.flatten(1)))
        return logits


class DictNet(nn.Module):
    '''Returns a dict in every mode, like torchvision's segmentation models.'''

    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(input_shape[0], 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        features = self.trunk(x)
        return {"out": self.head(features), "features": features}


def pool_net(input_shape, num_classes):
    '''Adaptive pooling to 3x3 of a 4x4 map: ONNX cannot express it, pt2 can.'''
    c = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(3), nn.Flatten(), nn.Linear(72, num_classes),
    )
"""

QUICK = {"epochs": 2, "finetune_epochs": 1, "batch_size": 8, "device": "cpu"}
PRUNE = {"gate": "hard_concrete", "penalty_target": 0.3, "penalty_lambda": 20.0, "gate_lr": 0.5}


def _config(model: str, shape: tuple[int, ...], **fields) -> TrialConfig:
    data = {"input_shape": list(shape), "num_classes": 4, "n_samples": 24}
    return TrialConfig(
        model=model,
        data="synthetic",
        data_options=data,
        granularity="channel",
        **PRUNE,
        **QUICK,
        **fields,
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding the user's ``zoonets.py``, made the working folder."""
    (tmp_path / "zoonets.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delitem(sys.modules, "zoonets", raising=False)
    yield tmp_path
    sys.modules.pop("zoonets", None)


# -- the rule ------------------------------------------------------------------------------

LOGITS, AUX = torch.randn(2, 4), torch.randn(2, 4)
Named = namedtuple("Named", ["main", "side"])


@pytest.mark.parametrize(
    "output",
    [
        LOGITS,
        GoogLeNetOutputs(LOGITS, AUX, None),
        InceptionOutputs(LOGITS, AUX),
        Named(LOGITS, AUX),
        (LOGITS, AUX),
        [LOGITS, AUX],
        {"out": LOGITS, "aux": AUX},
        {"aux": AUX, "logits": LOGITS},
    ],
    ids=["tensor", "googlenet", "inception", "namedtuple", "tuple", "list", "out", "logits"],
)
def test_the_primary_output_is_the_logits(output) -> None:
    assert primary_output(output) is LOGITS


def test_aux_losses_are_off_by_default_and_weighted_when_asked() -> None:
    y = torch.tensor([0, 3])
    output = GoogLeNetOutputs(LOGITS, AUX, None)  # torchvision's None for an absent head
    main_loss = F.cross_entropy(LOGITS, y)
    logits, loss = _classification_loss(output, y, 0.0)
    assert logits is LOGITS and torch.equal(loss, main_loss)
    _, weighted = _classification_loss(output, y, 0.3)
    assert torch.allclose(weighted, main_loss + 0.3 * F.cross_entropy(AUX, y))


# -- aux outputs through a whole trial -----------------------------------------------------


def test_googlenet_aux_heads_train_harden_count_and_export(tmp_path: Path) -> None:
    """With aux_weight the heads train with the trunk; hardening drops them (training-only,
    unseen by the eval-mode pruning graph), so fine-tuning and the rebuild run without them."""
    plain = create_model("torchvision/googlenet", (3, 32, 32), 4)
    assert plain.aux1 is None and plain.aux2 is None  # off by default
    config = _config("torchvision/googlenet", (3, 32, 32), model_options={"aux_weight": 0.3})
    result = run_trial(config, out_dir=tmp_path / "trial")
    assert result.metrics["flops"] < result.metrics["dense_flops"]
    assert result.model.aux1 is None and result.model.aux2 is None
    assert result.subnetwork["model"]["options"] == {}
    assert result.metrics["dense_params"] == sum(p.numel() for p in plain.parameters())
    report = export_subnetwork(str(tmp_path / "trial"), "onnx", tmp_path / "g.onnx")
    assert report.flops == result.metrics["flops"] and report.max_abs_diff <= 1e-4


def test_a_user_model_with_a_named_tuple_in_training_trains_and_exports(
    project: Path,
) -> None:
    config = _config("zoonets:AuxNet", (1, 6, 6), model_options={"aux_weight": 0.5})
    result = run_trial(config, out_dir=project / "trial")
    assert {r["phase"] for r in result.history} == {"gated", "finetune"}
    report = export_subnetwork(str(project / "trial"), "onnx", project / "a.onnx")
    assert report.max_abs_diff <= 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "pt2"])
def test_a_model_returning_a_dict_is_read_by_its_out_entry(project: Path, fmt: str) -> None:
    result = run_trial(_config("zoonets:DictNet", (1, 6, 6)), out_dir=project / "trial")
    report = export_subnetwork(str(project / "trial"), fmt, project / f"d.{fmt}")
    assert report.flops == result.metrics["flops"] and report.max_abs_diff <= 1e-4


# -- a format that cannot express a layer ------------------------------------------------------


def test_a_format_that_cannot_express_a_layer_names_the_ones_that_can(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_trial(_config("zoonets:pool_net", (1, 4, 4)), out_dir=project / "trial")
    capsys.readouterr()
    # the trial still times it, in torch eager, and says why not in onnxruntime
    runtime = result.metrics["latency_runtime"]
    assert runtime.startswith("torch ") and "(the ONNX export failed: " in runtime
    assert result.metrics["latency_ratio"] > 0
    assert main(["export", str(project / "trial"), "--format", "onnx", "-o", "m.onnx"]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and captured.out == "", captured
    assert "cannot write this subnetwork as onnx at 1x4x4 (" in err
    assert err.endswith("formats verified to work here: torchscript, pt2, safetensors"), err
    assert sorted(p.name for p in project.iterdir()) == ["trial", "zoonets.py"]
    assert main(["export", str(project / "trial"), "--format", "pt2", "-o", "m.pt2"]) == 0


# -- state-dict metadata -------------------------------------------------------------------


def test_mnasnet_rebuilds_from_subnetwork_json_and_safetensors(tmp_path: Path) -> None:
    """MNASNet refuses a state dict without its ``_version``, which safetensors drops."""
    result = run_trial(_config("torchvision/mnasnet0_5", (3, 32, 32)), out_dir=tmp_path / "t")
    rebuilt = load_subnetwork(tmp_path / "t")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), result.model.eval()(x), atol=1e-5)
    report = export_subnetwork(str(tmp_path / "t"), "safetensors", tmp_path / "m.safetensors")
    assert report.max_abs_diff == 0.0


def test_googlenet_weights_load_with_or_without_their_aux_heads(tmp_path: Path) -> None:
    """torchvision's GoogLeNet state dicts hold the heads; they load into the default build
    (no heads), and into one with heads when aux_weight asks for them."""
    import torchvision

    full = torchvision.models.get_model("googlenet", weights=None, num_classes=4)
    torch.save(full.state_dict(), tmp_path / "g.pt")
    plain = create_model("torchvision/googlenet", (3, 32, 32), 4, weights_file=tmp_path / "g.pt")
    assert plain.aux1 is None and torch.equal(plain.fc.weight, full.fc.weight)
    heads = create_model(
        "torchvision/googlenet", (3, 32, 32), 4, weights_file=tmp_path / "g.pt", aux_weight=0.3
    )
    assert torch.equal(heads.aux1.fc2.weight, full.aux1.fc2.weight)
