"""ARM's antithetic pass reuses the modules before the first gate, and only where that is exact."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archsearch.models import create_model
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups
from archsearch.pruning.unchanged_prefix import UnchangedPrefix


def _gated(model_name: str, shape: tuple[int, ...], granularity: str) -> GatedModel:
    torch.manual_seed(0)
    model = create_model(model_name, shape, 10)
    gated = GatedModel(model, find_groups(model, shape, granularity), "arm")
    return gated.train()


def _outputs_of(module: nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    module.register_forward_hook(lambda _m, _a, out: seen.append(out), prepend=True)
    return seen


def _antithetic_loss_recomputed(gated: GatedModel, x: torch.Tensor, y: torch.Tensor) -> float:
    """The antithetic pass as it was before any reuse: every module run again."""
    for gate in gated.gate_list:
        gate.begin_antithetic()
    gated._antithetic_pass = True
    try:
        with torch.no_grad():
            return float(F.cross_entropy(gated(x), y))
    finally:
        gated._antithetic_pass = False
        for gate in gated.gate_list:
            gate.end_antithetic()


@pytest.mark.parametrize(
    ("model_name", "shape", "granularity", "reused"),
    [
        ("lenet_300_100", (1, 28, 28), "neuron", "1"),  # Flatten, then the 784 x 300 layer
        ("tiny_cnn", (1, 12, 12), "channel", "0"),  # the stem convolution, before its norm
        ("lenet_300_100", (1, 28, 28), "weight", None),  # every layer's weight is masked
    ],
)
def test_the_antithetic_loss_is_the_one_recomputing_gives(
    model_name: str, shape: tuple[int, ...], granularity: str, reused: str | None
) -> None:
    gated = _gated(model_name, shape, granularity)
    x, y = torch.randn(16, *shape), torch.randint(0, 10, (16,))
    modules = dict(gated.base.named_modules())
    first = _outputs_of(modules[reused]) if reused else []
    loss = F.cross_entropy(gated(x), y)
    loss.backward()
    with torch.no_grad(), gated.antithetic():
        antithetic = float(F.cross_entropy(gated(x), y))
    assert antithetic == _antithetic_loss_recomputed(gated, x, y)  # bit for bit
    if reused:  # the second pass got the first pass's very tensor: nothing was recomputed
        assert first[1] is first[0]
        assert first[2] is not first[0]  # the recomputing pass ran the module
    # and the antithetic sample differed somewhere, so the comparison meant something
    assert antithetic != float(loss.detach())


def test_nothing_recorded_outlives_the_step() -> None:
    gated = _gated("lenet_300_100", (1, 28, 28), "neuron")
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    F.cross_entropy(gated(x), y).backward()
    assert gated._prefix.recorded == 2
    with torch.no_grad(), gated.antithetic():
        gated(x)
    assert gated._prefix.recorded == 0
    gated.eval()
    with torch.no_grad():
        gated(x)  # evaluation records nothing
    assert gated._prefix.recorded == 0


def test_an_output_changed_in_place_is_computed_again() -> None:
    """A ReLU(inplace=True) after an ungated layer rewrites the tensor the first pass kept."""
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(6, 5), nn.ReLU(inplace=True), nn.Linear(5, 3))
    prefix = UnchangedPrefix(base)
    prefix.attach()
    first_layer = _outputs_of(base[0])
    x = torch.randn(4, 6)
    with prefix.recording(x):
        expected = base(x)
    with prefix.replaying():
        again = base(x)
    assert first_layer[1] is not first_layer[0]  # version moved: the layer ran again
    assert torch.equal(again, expected)
