"""Every registered model builds offline and classifies; names and options fail clearly."""

import pytest
import torch
from torch import nn

from archsearch.errors import ConfigError, UnknownNameError
from archsearch.models import (
    classifier_layer,
    create_model,
    get_model_info,
    list_models,
    load_dense_weights,
    register_model,
)

REGISTERED = [name for name in list_models() if not name.startswith("torchvision/")]


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("name", REGISTERED)
def test_every_model_classifies_an_image(name: str) -> None:
    model = create_model(name, (3, 16, 16), 7).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 7)
    assert classifier_layer(model).out_features == 7


def test_lenet5_caffe_is_20_50_800_500_on_28x28() -> None:
    model = create_model("lenet5_caffe", (1, 28, 28), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in _convs(model)] == [20, 50]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [(800, 500), (500, 10)]


def test_lenet5_caffe_rejects_inputs_too_small() -> None:
    with pytest.raises(ConfigError, match="at least 16x16"):
        create_model("lenet5_caffe", (1, 12, 12), 10)


def test_mlp_widths_follow_hidden() -> None:
    model = create_model("mlp", (1, 8, 8), 4, hidden=[32, 16])
    widths = [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)]
    assert widths == [(64, 32), (32, 16), (16, 4)]


def test_resnet20_has_19_3x3_convs_and_2_projections() -> None:
    convs = _convs(create_model("resnet20", (3, 32, 32), 10))
    assert sum(c.kernel_size == (3, 3) for c in convs) == 19
    projections = [c for c in convs if c.kernel_size == (1, 1)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in projections] == [
        (16, 32, (2, 2)),
        (32, 64, (2, 2)),
    ]


def test_resnet56_depth_and_width_option() -> None:
    model = create_model("resnet56", (3, 32, 32), 10, width=4)
    assert len(_convs(model)) == 55 + 2
    assert classifier_layer(model).in_features == 16


def test_torchvision_model_builds_offline() -> None:
    model = create_model("torchvision/resnet18", (3, 32, 32), 10).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_torchvision_vit_is_built_for_the_datas_image_size() -> None:
    """torchvision fixes a ViT's size at 224 by default; a user's 64x64 images must fit."""
    model = create_model("torchvision/vit_b_32", (3, 64, 64), 10).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(ConfigError, match="multiple of its patch size"):
        create_model("torchvision/vit_b_32", (3, 48, 48), 10)


def test_torchvision_weights_file_round_trip(tmp_path) -> None:
    source = create_model("torchvision/squeezenet1_1", (3, 32, 32), 5)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    loaded = create_model(
        "torchvision/squeezenet1_1", (3, 32, 32), 5, weights_file=str(tmp_path / "w.pt")
    )
    assert torch.equal(classifier_layer(loaded).weight, classifier_layer(source).weight)
    with pytest.raises(ConfigError, match="does not exist"):
        create_model("torchvision/squeezenet1_1", (3, 32, 32), 5, weights_file="/no/such.pt")


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(UnknownNameError, match=r"'nope'.*lenet_300_100.*resnet20"):
        create_model("nope", (1, 28, 28), 10)
    with pytest.raises(UnknownNameError, match=r"'nope'.*resnet18"):
        create_model("torchvision/nope", (3, 32, 32), 10)
    with pytest.raises(UnknownNameError, match="did you mean 'torchvision/resnet18'"):
        create_model("resnet18", (3, 32, 32), 10)


def test_one_registry_words_every_unknown_name_the_same_way() -> None:
    """Gates, models and data sets share one registry; each message lists all the choices."""
    from archsearch.data import get_dataset_info, list_datasets
    from archsearch.gates import get_gate_info, list_gates

    cases = [
        (get_gate_info, "gate", f"{', '.join(list_gates())} (see `archsearch gates`)"),
        (get_model_info, "model", ", ".join(list_models())),
        (get_dataset_info, "dataset", ", ".join(list_datasets())),
    ]
    for get, kind, choices in cases:
        with pytest.raises(UnknownNameError) as caught:
            get("nope")
        assert str(caught.value) == f"unknown {kind} 'nope'; choose one of: {choices}"
    assert list_models()[-1] == "torchvision/<name>"


def test_a_name_registers_once() -> None:
    with pytest.raises(ValueError, match="model 'mlp' is registered twice"):
        register_model("mlp", "a second mlp")(lambda input_shape, num_classes: nn.Identity())
    assert get_model_info("mlp").description.startswith("fully connected")


def test_unknown_option_names_it_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="no option 'depth'; its options are: width"):
        create_model("resnet20", (3, 32, 32), 10, depth=32)
    with pytest.raises(ConfigError, match="no option 'width'; its options are: weights_file"):
        create_model("torchvision/resnet18", (3, 32, 32), 10, width=8)


def test_conv_model_on_flat_input_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        create_model("resnet20", (64,), 10)


def test_classifier_layer_falls_back_to_the_last_conv() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 10, 1))
    assert classifier_layer(model) is model[1]


def test_dense_weights_load_into_any_model_strictly(tmp_path) -> None:
    """safetensors, a .pt state dict, or a checkpoint holding one under ``state_dict``."""
    from safetensors.torch import save_file

    source = create_model("tiny_cnn", (1, 8, 8), 3)
    save_file(source.state_dict(), str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": source.state_dict(), "epoch": 7}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        target = create_model("tiny_cnn", (1, 8, 8), 3)
        load_dense_weights(target, tmp_path / name, "tiny_cnn")
        assert torch.equal(classifier_layer(target).weight, classifier_layer(source).weight)
    with pytest.raises(ConfigError) as caught:
        load_dense_weights(create_model("tiny_cnn", (1, 8, 8), 5), tmp_path / "w.pt", "tiny_cnn")
    assert "does not fit this model (shape: 8.weight is (3, 8) in the file, (5, 8)" in str(
        caught.value
    )
    with pytest.raises(
        ConfigError, match=r"'tiny_cnn': weights file '/no/such\.pt' does not exist"
    ):
        load_dense_weights(source, "/no/such.pt", "tiny_cnn")
