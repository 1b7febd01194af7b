"""Measured latency (issue 10): what a user reads next to the FLOPs ratio must be trustworthy.

Tiny models and short rounds keep the file fast; the properties checked are the ones a user
relies on: a model against itself is 1, a much smaller model is clearly faster, the caller's
models are left alone, and the sparse path computes what the dense one does.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.latency import (
    SPARSE_DENSITY,
    LatencyError,
    LatencySettings,
    measure_latency,
    sparse_latency,
    sparsify,
    weight_density,
)

SHAPE = (1, 8, 8)
FAST = {"repeats": 5, "round_ms": 2.0, "batch": 16}
KEYS = {
    "latency_ms",
    "dense_latency_ms",
    "latency_ratio",
    "latency_ms_batched",
    "dense_latency_ms_batched",
    "latency_ratio_batched",
    "latency_spread",
    "latency",
    "latency_runtime",
}


def _mlp(hidden: int, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 4))


def _zeroed(model: nn.Sequential, share: float) -> nn.Sequential:
    """``model`` with ``share`` of its first layer's weights zeroed, as weight pruning does."""
    with torch.no_grad():
        weight = model[1].weight
        keep = torch.rand(weight.shape, generator=torch.Generator().manual_seed(1)) >= share
        weight.mul_(keep)
    return model


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_a_model_against_a_copy_of_itself_is_one_within_its_spread(runtime: str) -> None:
    dense = _mlp(64)
    result = measure_latency(
        copy.deepcopy(dense), dense, SHAPE, LatencySettings(runtime=runtime, **FAST)
    )
    assert set(result) == KEYS
    for key in KEYS - {"latency_runtime"}:
        assert math.isfinite(result[key]) and result[key] >= 0, key
    assert abs(result["latency_ratio"] - 1) <= max(result["latency_spread"], 0.25)
    assert abs(result["latency_ratio_batched"] - 1) <= 0.25
    assert result["latency"] == result["latency_ratio"]
    assert result["latency_runtime"].startswith(runtime)
    assert "1 thread" in result["latency_runtime"]
    assert "batch 1 and 16" in result["latency_runtime"]


@pytest.mark.parametrize("runtime", ["onnxruntime", "torch"])
def test_a_much_narrower_model_is_clearly_faster(runtime: str) -> None:
    # 16 against 4096 hidden units: about 0.13 (torch) and 0.08 (onnxruntime) here. Against
    # 1024 units torch's per-call overhead left the ratio at 0.45-0.51, too near any bound.
    result = measure_latency(_mlp(16), _mlp(4096), SHAPE, LatencySettings(runtime=runtime, **FAST))
    assert result["latency_ratio_batched"] < 0.5
    assert result["latency_ms_batched"] < result["dense_latency_ms_batched"]


def test_the_callers_models_are_left_as_they_were() -> None:
    pruned, dense = _zeroed(_mlp(64), 0.95), _mlp(64)
    dense.train()
    pruned.eval()
    before = [copy.deepcopy(m.state_dict()) for m in (pruned, dense)]
    threads = torch.get_num_threads()
    for runtime in ("onnxruntime", "torch"):
        measure_latency(pruned, dense, SHAPE, LatencySettings(runtime=runtime, threads=2, **FAST))
    assert sparse_latency(pruned, dense, SHAPE, LatencySettings(threads=2, **FAST))
    assert all(m.training for m in dense.modules())
    assert not any(m.training for m in pruned.modules())
    for model, state in zip((pruned, dense), before, strict=True):
        assert model.state_dict().keys() == state.keys()
        for name, value in model.state_dict().items():
            assert torch.equal(value, state[name]), name
    assert torch.get_num_threads() == threads


def test_off_measures_nothing() -> None:
    off = LatencySettings(runtime="off")
    assert measure_latency(_mlp(16), _mlp(64), SHAPE, off) == {}
    assert sparse_latency(_zeroed(_mlp(64), 0.95), _mlp(64), SHAPE, off) == {}


def test_the_thread_count_is_named() -> None:
    settings = LatencySettings(runtime="onnxruntime", threads=2, **FAST)
    result = measure_latency(_mlp(16), _mlp(64), SHAPE, settings)
    assert "2 threads" in result["latency_runtime"]


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"runtime": "tensorrt"}, "latency.runtime"),
        ({"batch": 0}, "latency.batch"),
        ({"batch": 2.5}, "latency.batch"),
        ({"repeats": 0}, "latency.repeats"),
        ({"threads": True}, "latency.threads"),
        ({"round_ms": 0}, "latency.round_ms"),
        ({"round_ms": float("nan")}, "latency.round_ms"),
        ({"round_ms": "fast"}, "latency.round_ms"),
    ],
)
def test_bad_settings_are_one_line_naming_the_key(values: dict, key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        LatencySettings(**values)
    message = str(raised.value)
    assert message.startswith(f"{key} = ") and "\n" not in message


def test_the_runtime_error_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="expected onnxruntime, torch or off"):
        LatencySettings(runtime="tensorrt")


def test_weight_density_counts_the_nonzero_share() -> None:
    model = _zeroed(_mlp(32), 0.95)
    assert weight_density(_mlp(32)) == 1.0
    assert weight_density(model[1]) == pytest.approx(0.05, abs=0.02)
    layers = (model[1].weight, model[3].weight)
    nonzero = sum(int(torch.count_nonzero(w)) for w in layers)
    assert weight_density(model) == nonzero / sum(w.numel() for w in layers)
    assert weight_density(nn.ReLU()) == 1.0


def test_a_sparse_layer_runs_as_csr_and_computes_the_same() -> None:
    model = _zeroed(_mlp(32), 0.95)
    sparse, converted = sparsify(model)
    assert converted == 1
    assert sparse[1].weight.layout == torch.sparse_csr
    assert isinstance(sparse[3], nn.Linear)  # dense: density 1 > SPARSE_DENSITY
    for batch in (1, 64):
        x = torch.randn(batch, *SHAPE)
        with torch.inference_mode():
            torch.testing.assert_close(sparse(x), model(x), rtol=1e-5, atol=1e-5)
    result = sparse_latency(model, _mlp(32), SHAPE, LatencySettings(**FAST))
    assert result["sparse_layers"] == 1
    for key in ("sparse_latency_ratio", "sparse_latency_ratio_batched"):
        assert math.isfinite(result[key]) and result[key] > 0, key


def test_a_layer_without_a_bias_converts_too() -> None:
    layer = nn.Linear(64, 8, bias=False)
    with torch.no_grad():
        layer.weight[:, 4:] = 0
    sparse, converted = sparsify(layer)
    assert converted == 1 and weight_density(layer) <= SPARSE_DENSITY
    x = torch.randn(3, 5, 64)  # leading dimensions are kept, as nn.Linear keeps them
    torch.testing.assert_close(sparse(x), layer(x), rtol=1e-5, atol=1e-5)


def test_a_dense_model_has_no_sparse_path() -> None:
    dense = _mlp(32)
    assert sparsify(dense)[1] == 0
    assert sparse_latency(dense, dense, SHAPE, LatencySettings(**FAST)) == {}


class _Eigenvalues(nn.Module):
    """An operator the ONNX exporter has no translation for."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.flatten(1)[:, :4]
        return torch.linalg.eigh(rows[:, :, None] * rows[:, None, :]).eigenvalues


def test_a_model_onnx_cannot_express_is_one_line_pointing_to_torch() -> None:
    settings = LatencySettings(runtime="onnxruntime", **FAST)
    with pytest.raises(LatencyError) as raised:
        measure_latency(_Eigenvalues(), _Eigenvalues(), SHAPE, settings)
    message = str(raised.value)
    assert "linalg_eigh" in message and "latency_runtime to torch" in message
    assert "\n" not in message
    torch_result = measure_latency(
        _Eigenvalues(), _Eigenvalues(), SHAPE, LatencySettings(**{**FAST, "runtime": "torch"})
    )
    assert math.isfinite(torch_result["latency"])


class _ReadsItsWeight(nn.Module):
    """A parent that uses its Linear's weight as a tensor instead of calling the Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = _zeroed(_mlp(32), 0.95)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * self.proj.weight.view(-1)[:64]


def test_no_sparse_number_for_a_sparse_copy_that_computes_something_else() -> None:
    model = _ReadsItsWeight()
    assert sparsify(model)[1] == 1
    assert sparse_latency(model, _ReadsItsWeight(), SHAPE, LatencySettings(**FAST)) == {}


def test_attention_projections_stay_dense() -> None:
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        attention.out_proj.weight[:, 1:] = 0
    assert sparsify(attention)[1] == 0
