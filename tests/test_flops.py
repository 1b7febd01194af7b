"""FLOPs by fvcore: exact counts worked out by hand, densities, and no silent zeros."""

import pytest
import torch
from torch import nn

from archsearch.errors import ConfigError, FlopCountError
from archsearch.models import create_model
from archsearch.pruning.flops import (
    CONVENTION,
    count_flops,
    count_nonzero_params,
    count_params,
)


def test_lenet_300_100_counts_one_flop_per_multiply_accumulate() -> None:
    report = count_flops(create_model("lenet_300_100", (1, 28, 28), 10), (1, 28, 28))
    assert report.total == 784 * 300 + 300 * 100 + 100 * 10  # 266,200
    assert report.per_layer == {"1": 784 * 300, "3": 300 * 100, "5": 100 * 10}
    assert sum(report.per_layer.values()) == report.total


def test_lenet5_caffe_dense_count() -> None:
    conv1 = 20 * 24 * 24 * (1 * 5 * 5)  # 20 maps of 24x24, each output a 5x5 window
    conv2 = 50 * 8 * 8 * (20 * 5 * 5)  # 50 maps of 8x8 over 20 input maps
    fc1, fc2 = 800 * 500, 500 * 10
    report = count_flops(create_model("lenet5_caffe", (1, 28, 28), 10), (1, 28, 28))
    assert report.total == conv1 + conv2 + fc1 + fc2 == 2_293_000


def test_density_scales_a_layer_count() -> None:
    model = create_model("lenet_300_100", (1, 28, 28), 10)
    report = count_flops(model, (1, 28, 28), densities={"1": 0.5})
    assert report.per_layer["1"] == 784 * 300 // 2
    assert report.total == 784 * 300 // 2 + 300 * 100 + 100 * 10


def test_density_for_a_layer_the_model_lacks_is_an_error() -> None:
    with pytest.raises(ConfigError, match="'fc9'"):
        count_flops(
            create_model("lenet_300_100", (1, 28, 28), 10), (1, 28, 28), densities={"fc9": 0.5}
        )


class Tensordot(nn.Module):
    """A linear map through torch.tensordot, an operator fvcore 0.1.5 has no handle for."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensordot(x, self.weight, dims=1)


class Bilinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bilinear = nn.Bilinear(16, 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bilinear(x, x)


@pytest.mark.parametrize(("model", "op"), [(Tensordot(), "tensordot"), (Bilinear(), "bilinear")])
def test_an_uncounted_matmul_is_an_error_not_a_zero(model: nn.Module, op: str) -> None:
    with pytest.raises(FlopCountError, match=f"aten::{op}"):
        count_flops(model, (16,))


def test_cheap_skipped_ops_stay_uncounted() -> None:
    # resnet adds, ReLUs and pooling are skipped by fvcore; convs, BN and the fc are counted
    model = create_model("tiny_resnet", (3, 8, 8), 4)
    report = count_flops(model, (3, 8, 8))
    assert report.total == sum(report.per_layer.values()) > 0
    assert report.per_layer["fc"] == 16 * 4


def test_attention_is_counted() -> None:
    attention = nn.MultiheadAttention(8, 2, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = attention

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attention(x, x, x, need_weights=False)[0]

    tokens, dim = 5, 8
    projections = 4 * tokens * dim * dim  # q, k, v in; one out
    products = 2 * tokens * tokens * dim  # q @ k^T and weights @ v, summed over heads
    assert count_flops(SelfAttention(), (tokens, dim)).total == projections + products


def test_modes_are_restored_module_by_module() -> None:
    model = create_model("tiny_cnn", (1, 8, 8), 4).train()
    model[1].eval()  # a frozen BatchNorm inside a training model
    count_flops(model, (1, 8, 8))
    assert model.training and not model[1].training and model[4].training


def test_report_records_how_it_was_counted() -> None:
    report = count_flops(create_model("mlp", (4,), 2, hidden=[3]), (4,)).to_dict()
    assert report["total"] == 4 * 3 + 3 * 2
    assert report["input_shape"] == [4]
    assert report["counter"] == "fvcore.FlopCountAnalysis"
    assert report["counter_version"].startswith("0.1.5")
    assert report["convention"] == CONVENTION


def test_param_counts() -> None:
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight[0].zero_()
    assert count_params(layer) == 4 * 3 + 3
    assert count_nonzero_params(layer) == 4 * 3 + 3 - 4
