"""Channel pruning follows Torch-Pruning's groups whatever the layout.

One tiny network per structure the torchvision classifiers use (grouped and depthwise
convolutions, a channel shuffle, concatenation, a channels-last LayerNorm/Linear block,
squeeze-excite) is gated at channel granularity, trained a few steps with a penalty that
forces removals, hardened, and must compute what the gated model computes in eval mode while
being physically smaller. Layers whose channels cannot be removed exactly are refused before
training, one line each, and the rest is still gated.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from archsearch.errors import GranularityError
from archsearch.models import create_model
from archsearch.pruning.cost import CostModel
from archsearch.pruning.flops import count_flops
from archsearch.pruning.gated_model import GatedModel
from archsearch.pruning.groups import find_groups, layer_geometry
from archsearch.pruning.harden import harden

SHAPE = (3, 16, 16)


def _stem(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))


class _Net(nn.Module):
    """stem → body → global average pool → classifier."""

    def __init__(self, width: int, body: nn.Module, out: int | None = None) -> None:
        super().__init__()
        self.stem, self.body = _stem(width), body
        self.fc = nn.Linear(out or width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(F.relu(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def grouped() -> nn.Module:
    body = nn.Sequential(
        nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 24, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
    )  # fmt: skip
    return _Net(16, body, 24)


def depthwise() -> nn.Module:
    body = nn.Sequential(
        nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
        nn.Conv2d(32, 16, 1, bias=False), nn.BatchNorm2d(16),
    )  # fmt: skip
    return _Net(16, body)


class _Shuffle(nn.Module):
    """ShuffleNetV2's unit: half the channels pass, half go through a branch, then shuffle."""

    def __init__(self, width: int) -> None:
        super().__init__()
        half = width // 2
        self.branch = nn.Sequential(
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
            nn.Conv2d(half, half, 3, padding=1, groups=half, bias=False), nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU(),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, through = x.chunk(2, dim=1)
        out = torch.cat((keep, self.branch(through)), dim=1)
        n, c, h, w = out.shape
        return out.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def shuffle() -> nn.Module:
    body = nn.Sequential(_Shuffle(16), _Shuffle(16), nn.Conv2d(16, 32, 1), nn.ReLU())
    return _Net(16, body, 32)


class _Dense(nn.Module):
    def __init__(self, width: int, growth: int) -> None:
        super().__init__()
        self.bn, self.conv = nn.BatchNorm2d(width), nn.Conv2d(width, growth, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.conv(F.relu(self.bn(x)))), dim=1)


def concatenation() -> nn.Module:
    return _Net(16, nn.Sequential(_Dense(16, 8), _Dense(24, 8)), 32)


class _ChannelsLast(nn.Module):
    """ConvNeXt's block: depthwise conv, then LayerNorm and an MLP on (N, H, W, C)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.norm = nn.LayerNorm(width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        return x + self.down(F.gelu(self.up(y))).permute(0, 3, 1, 2)


def channels_last() -> nn.Module:
    return _Net(16, nn.Sequential(_ChannelsLast(16), _ChannelsLast(16)))


class _SqueezeExcite(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(16, width, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.se = torchvision.ops.SqueezeExcitation(width, width // 4)
        self.project = nn.Conv2d(width, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.se(self.expand(x)))


def squeeze_excite() -> nn.Module:
    return _Net(16, nn.Sequential(_SqueezeExcite(32), nn.ReLU()))


TINY = [grouped, depthwise, shuffle, concatenation, channels_last, squeeze_excite]


class _WindowBlock(nn.Module):
    """Swin's block on a channels-last image: attention within windows (a reshape into windows
    and heads) and an MLP, each behind a LayerNorm and a residual addition."""

    def __init__(self, width: int, heads: int = 2, window: int = 2) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        hidden = 2 * width
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.heads, self.window = heads, window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        s, heads = self.window, self.heads
        y = self.norm1(x).view(n, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5)
        y = y.reshape(-1, s * s, c)
        qkv = self.qkv(y).reshape(y.shape[0], s * s, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        attention = (qkv[0] @ qkv[1].transpose(-2, -1)).softmax(-1)
        y = self.proj((attention @ qkv[2]).transpose(1, 2).reshape(-1, s * s, c))
        y = y.view(n, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)
        x = x + y
        return x + self.mlp(self.norm2(x))


class _SwinLike(nn.Module):
    """Patch embedding, two window blocks on (N, H, W, C), LayerNorm, pool, classifier."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, 4, stride=4)
        self.blocks = nn.Sequential(_WindowBlock(width), _WindowBlock(width))
        self.norm, self.fc = nn.LayerNorm(width), nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.blocks(self.embed(x).permute(0, 2, 3, 1)))
        return self.fc(x.mean((1, 2)))


def swin_like(input_shape: tuple[int, ...] = SHAPE, num_classes: int = 10) -> nn.Module:
    return _SwinLike()


def _train_to_prune(gated: GatedModel, cost: CostModel, shape: tuple[int, ...]) -> None:
    """A few steps of cross-entropy plus a heavy penalty towards 40% of the dense cost, then
    the weaker half of each group's gates closed (what more steps would reach): real removals,
    and no layer closed entirely."""
    weights = [p for p in gated.base.parameters()]
    optimizer = torch.optim.Adam(
        [{"params": weights, "lr": 1e-3}, {"params": gated.gate_parameters(), "lr": 0.5}]
    )
    x, y = torch.randn(16, *shape), torch.randint(0, 10, (16,))
    gated.train()
    for _ in range(15):
        optimizer.zero_grad()
        ratio = cost.ratio(gated.keep_probabilities())
        loss = F.cross_entropy(gated(x), y) + 20.0 * (ratio - 0.4) ** 2
        loss.backward()
        optimizer.step()
        gated.after_optimizer_step()
    with torch.no_grad():  # a few steps move the gates; decide them as a longer run would
        for group in gated.groups:
            log_alpha = gated.gate(group.name).log_alpha
            weakest = torch.argsort(log_alpha)[: group.size // 2]
            log_alpha.clamp_(min=1.0)
            log_alpha[weakest] = -10.0


def _prune_and_compare(
    model: nn.Module, shape: tuple[int, ...], granularity: str = "channel"
) -> tuple[int, int]:
    geometry = layer_geometry(model, shape)
    groups = find_groups(model, shape, granularity, geometry=geometry)
    gated = GatedModel(model, groups, "hard_concrete")
    _train_to_prune(gated, CostModel(geometry, groups), shape)
    gated.eval()
    x = torch.randn(8, *shape)
    with torch.no_grad():
        expected = gated(x)
        result = harden(gated, shape)
        hardened = result.model
        actual = hardened(x)
    assert not result.degenerate_groups  # a closed layer is revived: not what the gates computed
    assert (actual - expected).abs().max().item() <= 1e-4
    return count_flops(model, shape).total, count_flops(hardened, shape).total


@pytest.mark.parametrize("build", TINY, ids=[b.__name__ for b in TINY])
def test_tiny_structure_hardens_exactly_and_smaller(build) -> None:
    torch.manual_seed(0)
    dense, hardened = _prune_and_compare(build(), SHAPE)
    assert hardened < 0.8 * dense, f"too little removed: {hardened} of {dense} FLOPs"


def test_grouped_convolution_keeps_whole_groups() -> None:
    torch.manual_seed(0)
    model = grouped()
    groups = find_groups(model, SHAPE, "channel")
    by_root = {g.name: g for g in groups}
    assert by_root["body.0"].repeat == 4 and by_root["body.0"].size == 8  # 32 channels, 4 groups
    gated = GatedModel(model, groups, "hard_concrete")
    with torch.no_grad():
        for group in groups:
            gated.gate(group.name).log_alpha.normal_(0.0, 3.0)
    hardened = harden(gated.eval(), SHAPE).model
    conv = hardened.body[3]
    assert conv.groups == 4 and conv.in_channels % 4 == 0 and conv.out_channels % 4 == 0


def test_refused_layers_are_named_before_training() -> None:
    """The channel shuffle's and the LayerNorm's channels cannot be removed exactly: each such
    layer is named in one line, and the layers around them are still gated."""
    for build, why in ((shuffle, "reorder"), (channels_last, "LayerNorm")):
        groups = find_groups(build(), SHAPE, "channel")
        assert groups and groups.refused
        assert all("is not gated:" in line and "\n" not in line for line in groups.refused)
        assert any(why in line for line in groups.refused)
    mlp = {g.name for g in find_groups(channels_last(), SHAPE, "channel")}
    assert "body.0.up" in mlp  # the channels-last Linear is gated as channels


def test_nothing_left_to_gate_is_one_line_error() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Flatten(2), nn.LayerNorm(196), nn.Flatten(), nn.Linear(8 * 196, 10)
    )
    with pytest.raises(GranularityError, match="finds nothing to prune") as error:
        find_groups(model, SHAPE, "channel")
    assert "\n" not in str(error.value)


def test_swin_like_mlp_blocks_prune_at_neuron_granularity() -> None:
    """The MLPs of a Swin block run on channels-last images: at neuron granularity their
    hidden units are neurons, gated, hardened exactly and removed; the attention, which a
    reshape regroups into windows and heads, is refused in one line per layer."""
    torch.manual_seed(0)
    groups = find_groups(swin_like(), SHAPE, "neuron")
    assert [g.name for g in groups] == ["blocks.0.mlp.0", "blocks.1.mlp.0"]
    assert all(g.kind == "neuron" for g in groups)
    assert any("'blocks.0.qkv'" in line and "reshape" in line for line in groups.refused)
    assert all("\n" not in line for line in groups.refused)
    dense, hardened = _prune_and_compare(swin_like(), SHAPE, "neuron")
    assert hardened < dense


def test_swin_like_neuron_trial_exports_verified(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archsearch.config import TrialConfig
    from archsearch.export import export_subnetwork
    from archsearch.trial import run_trial

    monkeypatch.setitem(sys.modules, "tests_zoo_blocks", sys.modules[__name__])
    config = TrialConfig(
        model="tests_zoo_blocks:swin_like",
        data="synthetic",
        data_options={"input_shape": list(SHAPE), "num_classes": 10, "n_samples": 24},
        granularity="neuron",
        gate="hard_concrete",
        penalty_target=0.3,
        penalty_lambda=20.0,
        gate_lr=1.0,
        epochs=2,
        finetune_epochs=1,
        batch_size=8,
        device="cpu",
        latency_runtime="off",
    )
    result = run_trial(config, out_dir=tmp_path / "trial")
    assert result.metrics["flops"] < result.metrics["dense_flops"]
    report = export_subnetwork(str(tmp_path / "trial"), "onnx", tmp_path / "swin.onnx")
    assert report.flops == result.metrics["flops"] and report.max_abs_diff <= 1e-4


@pytest.mark.slow
def test_torchvision_swin_groups_are_found_in_seconds() -> None:
    """Torch-Pruning's index lists through Swin's window and head reshapes grew by their
    stride on every pass (over 150 s for one ``find_groups``): now a group stops there."""
    model = create_model("torchvision/swin_t", (3, 32, 32), 10)
    started = time.perf_counter()
    groups = find_groups(model, (3, 32, 32), "neuron")
    assert time.perf_counter() - started < 60
    assert len(groups) == 12 and all(g.name.endswith(".mlp.0") for g in groups)
    assert any("reshape" in line for line in groups.refused)


TORCHVISION = ["mobilenet_v3_small", "shufflenet_v2_x0_5", "regnet_x_400mf", "convnext_tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_classifier_hardens_exactly(name: str) -> None:
    torch.manual_seed(0)
    shape = (3, 32, 32)
    dense, hardened = _prune_and_compare(create_model(f"torchvision/{name}", shape, 10), shape)
    assert hardened < dense


def test_the_search_preflight_names_the_refused_layers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user's ShuffleNet-like model in a space file: the report printed before the search
    names each layer it will not gate, with the reason, and still finds groups to gate."""
    import textwrap

    from archsearch.space import load_spec

    (tmp_path / "shufflenets.py").write_text(
        textwrap.dedent(
            """
            import tests_zoo_blocks as blocks

            def build(input_shape, num_classes):
                return blocks.shuffle()
            """
        )
    )
    monkeypatch.setitem(sys.modules, "tests_zoo_blocks", sys.modules[__name__])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "space.yaml").write_text(
        "name: shuffle\nmodel: {name: 'shufflenets:build'}\n"
        f"data: {{name: synthetic, options: {{input_shape: {list(SHAPE)}, num_classes: 10}}}}\n"
        "space: {granularity: [channel], gate: [hard_concrete]}\n"
    )
    report = load_spec(tmp_path / "space.yaml").preflight
    refused = [line for line in report if "is not gated:" in line and "reorder" in line]
    assert refused, report
    assert any(line.startswith("channel: ") and "groups" in line for line in report), report
