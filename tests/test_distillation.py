"""Fine-tuning toward the dense network: the loss, the settings, and a trial that uses them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import ARCHSEARCH, TINY_SPACE, space_error, tiny_space
from safetensors.torch import save_file

from archsearch.config import TrialConfig
from archsearch.distillation import distillation_loss
from archsearch.errors import ConfigError
from archsearch.trial import build_model, dense_reference, load_data, run_trial

DIGITS = {
    "model": "mlp",
    "model_options": {"hidden": [64, 32]},
    "data": "digits",
    "epochs": 3,
    "finetune_epochs": 2,
    "batch_size": 64,
    "gate": "trainable_gate",
    "granularity": "neuron",
    "penalty_lambda": 2.0,
    "latency_runtime": "off",
}


def test_the_loss_is_zero_at_the_teacher_and_pulls_toward_it() -> None:
    torch.manual_seed(0)
    teacher = torch.randn(32, 10)
    assert float(distillation_loss(teacher.clone(), teacher, 4.0)) == pytest.approx(0, abs=1e-6)
    student = torch.randn(32, 10, requires_grad=True)
    before = distillation_loss(student, teacher, 4.0)
    before.backward()
    with torch.no_grad():
        moved = student - 0.5 * student.grad
    assert float(distillation_loss(moved, teacher, 4.0)) < float(before.detach())


@pytest.mark.parametrize(
    ("override", "key"),
    [({"distill_weight": 1.5}, "distill_weight"), ({"distill_temperature": 0}, "temperature")],
)
def test_bad_distillation_settings_name_their_key(override: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        TrialConfig(**override)


def test_a_space_that_trains_from_scratch_cannot_distil(tmp_path: Path) -> None:
    train = {**TINY_SPACE["train"], "distill_weight": 0.5}
    error = space_error(tmp_path, tiny_space(train=train))
    assert error.endswith(
        "train.distill_weight: distils the trained dense network a trial starts from, but the "
        "trials start from scratch: use init: {from: reference} (the default when the search "
        "trains its reference) or init.weights"
    )


def test_the_command_says_so_in_one_line(tmp_path: Path) -> None:
    import subprocess

    flags = ["--model", "mlp", "--data", "digits", "--epochs", "1", "--distill-weight", "0.5"]
    done = subprocess.run(
        [*ARCHSEARCH, "train", *flags, "--out", str(tmp_path / "t")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "distill_weight needs the trained dense network" in lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrialConfig, object, Path]:
    """The digits MLP's dense reference, saved as a search saves it for its trials."""
    config = TrialConfig(**DIGITS)
    data = load_data(config)
    reference = dense_reference(dataclasses.replace(config, epochs=8), data)
    path = tmp_path_factory.mktemp("reference") / "weights.safetensors"
    save_file(reference.weights, str(path))
    return dataclasses.replace(config, init_weights=str(path)), data, path


def _divergence_from_dense(config: TrialConfig, data, subnet: torch.nn.Module) -> float:
    dense = build_model(config, data.input_shape, data.num_classes).eval()
    x = next(iter(data.batches("val", data.size("val"))))[0]
    with torch.no_grad():
        return float(distillation_loss(subnet.eval()(x), dense(x), 1.0))


def test_distilled_fine_tuning_ends_nearer_the_dense_network(trained) -> None:
    """Same trial, same pruned subnetwork before fine-tuning: only the fine-tuning's target
    differs, and the distilled one's outputs end nearer the dense network's."""
    config, data, _ = trained
    plain = run_trial(config, data=data)
    distilled = run_trial(dataclasses.replace(config, distill_weight=1.0), data=data)
    assert plain.subnetwork["layers"] == distilled.subnetwork["layers"]
    near = _divergence_from_dense(config, data, distilled.model)
    far = _divergence_from_dense(config, data, plain.model)
    assert near < 0.8 * far
