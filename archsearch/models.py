"""Models by name: a registry of builders, in the style of timm's ``create_model``.

Every model is made of standard ``torch.nn`` layers only (Conv2d, BatchNorm2d, Linear, ReLU,
pooling, Flatten), because two tools must understand them without help: Torch-Pruning's
dependency graph (to find and remove coupled channels) and fvcore (to count FLOPs). A builder
takes ``(input_shape, num_classes, *, options)``; its keyword-only arguments *are* its options,
so the allowed options and their defaults are read from the signature (``archsearch.registry``)
and cannot drift from the code. A name ``"package.module:callable"`` is the user's own builder
(``archsearch.model_import``); any model can start from trained weights (``load_dense_weights``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from archsearch.errors import ConfigError
from archsearch.model_import import aux_head_params as aux_head_params
from archsearch.model_import import aux_loss_weight as aux_loss_weight
from archsearch.model_import import aux_outputs as aux_outputs
from archsearch.model_import import check_output as check_output
from archsearch.model_import import drop_aux_heads as drop_aux_heads
from archsearch.model_import import import_model
from archsearch.model_import import load_dense_weights as load_dense_weights
from archsearch.model_import import primary_output as primary_output
from archsearch.model_import import with_module_versions as with_module_versions
from archsearch.registry import Registry, option_defaults
from archsearch.torchvision_models import TORCHVISION_PREFIX, torchvision_builder, torchvision_names
from archsearch.user_code import is_import_path

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelInfo:
    """A registry entry: enough to list a model and validate its options without building it."""

    name: str
    builder: Builder
    description: str
    #: the options when the builder's keyword-only parameters do not tell (imported models)
    options: dict[str, Any] | None = None

    def option_defaults(self) -> dict[str, Any]:
        """The builder's keyword-only options with their defaults."""
        return option_defaults(self.builder) if self.options is None else dict(self.options)


class _ModelRegistry(Registry[ModelInfo]):
    """The registered models, any torchvision classifier as ``torchvision/<name>``, and the
    user's own builders as ``package.module:callable``."""

    def names(self) -> list[str]:
        return [*super().names(), f"{TORCHVISION_PREFIX}<name>"]

    def get(self, name: str) -> ModelInfo:
        if name.startswith(TORCHVISION_PREFIX):
            builder = torchvision_builder(name.removeprefix(TORCHVISION_PREFIX))
            return ModelInfo(name, builder, "a torchvision classifier, random init")
        if is_import_path(name):
            imported = import_model(name)
            return ModelInfo(name, imported, imported.description, imported.options)
        return super().get(name)

    def hint(self, name: str) -> str:
        if name in torchvision_names():
            return f" (did you mean '{TORCHVISION_PREFIX}{name}'?)"
        return ""


MODELS = _ModelRegistry("model")


def register_model(name: str, description: str) -> Callable[[Builder], Builder]:
    """Decorator that adds a builder to the registry under ``name``."""
    return MODELS.decorator(name, lambda builder: ModelInfo(name, builder, description))


def list_models() -> list[str]:
    """Registered names in registration order, then the torchvision pattern."""
    return MODELS.names()


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for ``name`` (``torchvision/<name>`` and import paths included)."""
    return MODELS.get(name)


def create_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build model ``name`` for inputs of ``input_shape`` (C, H, W or flat) and ``num_classes``.

    ``name`` is a registered name, ``torchvision/<name>`` or ``"package.module:callable"``.
    """
    if is_import_path(name):  # the imported builder checks its own options (it may take any)
        builder = import_model(name)
        return builder(_check_shape(name, input_shape, num_classes), num_classes, **options)
    info = MODELS.with_options(name, options)
    return info.builder(_check_shape(name, input_shape, num_classes), num_classes, **options)


def classifier_layer(model: nn.Module) -> nn.Module:
    """The layer that produces the class scores: its outputs are the classes, never pruned.

    That is the last Linear in module order, or the last Conv2d for all-convolutional
    classifiers such as SqueezeNet.
    """
    for kind in (nn.Linear, nn.Conv2d):
        layers = [m for m in model.modules() if isinstance(m, kind)]
        if layers:
            return layers[-1]
    raise ConfigError(f"{type(model).__name__} has no Linear or Conv2d layer to classify with")


# -- shared checks and init ---------------------------------------------------------------


def _check_shape(name: str, input_shape: Sequence[int], num_classes: int) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ConfigError(f"model {name!r}: input_shape must be positive ints, got {shape}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"model {name!r}: num_classes must be an int >= 2, got {num_classes}")
    return shape


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Convolutional models need (C, H, W); say so instead of failing inside a layer."""
    if len(input_shape) != 3:
        raise ConfigError(
            f"model {name!r} needs image inputs (C, H, W), got input_shape {input_shape}; "
            "use `mlp` for flat data"
        )
    return input_shape  # type: ignore[return-value]


def _init_conv(model: nn.Module) -> nn.Module:
    """He et al.'s init for ReLU networks; BatchNorm starts as the identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


# -- fully connected ----------------------------------------------------------------------


def _mlp(in_features: int, hidden: Sequence[int], num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(in_features, width), nn.ReLU()]
        in_features = width
    layers.append(nn.Linear(in_features, num_classes))
    return nn.Sequential(*layers)


@register_model("mlp", "fully connected ReLU network; widths set by `hidden`")
def mlp(
    input_shape: tuple[int, ...], num_classes: int, *, hidden: Sequence[int] = (300, 100)
) -> nn.Module:
    widths = tuple(hidden)
    if not all(isinstance(w, int) and w > 0 for w in widths):
        raise ConfigError(f"model 'mlp': hidden must be a list of positive ints, got {hidden}")
    return _mlp(math.prod(input_shape), widths, num_classes)


@register_model("lenet_300_100", "LeNet-300-100: the classic 784-300-100-10 MLP")
def lenet_300_100(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return _mlp(math.prod(input_shape), (300, 100), num_classes)


# -- convolutional ------------------------------------------------------------------------


def _lenet5_flat_size(name: str, input_shape: tuple[int, int, int]) -> int:
    """Spatial size after conv5-pool2-conv5-pool2; non-positive means the input is too small."""
    _, h, w = input_shape
    for _ in range(2):
        h, w = (h - 4) // 2, (w - 4) // 2
    if h < 1 or w < 1:
        raise ConfigError(
            f"model {name!r} needs inputs of at least 16x16 pixels, got {input_shape[1:]}"
        )
    return 50 * h * w


@register_model("lenet5_caffe", "Caffe LeNet-5: conv20-conv50-fc500 (20-50-800-500 on 28x28)")
def lenet5_caffe(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    shape = _image_shape("lenet5_caffe", input_shape)
    model = nn.Sequential(
        nn.Conv2d(shape[0], 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(_lenet5_flat_size("lenet5_caffe", shape), 500), nn.ReLU(),
        nn.Linear(500, num_classes),
    )  # fmt: skip
    return _init_conv(model)


@register_model("tiny_cnn", "for tests: conv4-conv8, BatchNorm, global pool, linear")
def tiny_cnn(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    shape = _image_shape("tiny_cnn", input_shape)
    model = nn.Sequential(
        nn.Conv2d(shape[0], 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )  # fmt: skip
    return _init_conv(model)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016).

    Where the shape changes the shortcut is a 1x1 convolution with BatchNorm ("option B"),
    not option A's zero padding: a projection is an ordinary layer, so Torch-Pruning's
    dependency graph can couple the shortcut's channels with the block's and remove them.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Out of place, so jit tracing (fvcore) and the dependency graph see a plain add.
        out = out + self.shortcut(x)
        return self.relu2(out)


class CifarResNet(nn.Module):
    """CIFAR-style ResNet (He et al. 2016, section 4.2): depth = 6 * blocks_per_stage + 2.

    Stages of ``width``, 2x and 4x channels; the first block of stages 2 and 3 halves the
    resolution. Shortcuts that change shape are 1x1 projections (see ``BasicBlock``) so that
    Torch-Pruning can remove channels across the residual adds.
    """

    def __init__(
        self, blocks_per_stage: int, in_channels: int, num_classes: int, width: int = 16
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        blocks: list[nn.Module] = []
        channels = width
        for stage in range(3):
            out_channels = width * 2**stage
            for i in range(blocks_per_stage):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)
        _init_conv(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layers(x)
        return self.fc(self.flatten(self.pool(x)))


def _cifar_resnet(
    name: str, blocks: int, input_shape: tuple[int, ...], num_classes: int, width: int
) -> nn.Module:
    shape = _image_shape(name, input_shape)
    if not isinstance(width, int) or width < 1:
        raise ConfigError(f"model {name!r}: width must be a positive int, got {width!r}")
    return CifarResNet(blocks, shape[0], num_classes, width)


@register_model("resnet20", "CIFAR ResNet-20 (3x3 blocks per stage, 16-32-64 channels)")
def resnet20(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16) -> nn.Module:
    return _cifar_resnet("resnet20", 3, input_shape, num_classes, width)


@register_model("resnet56", "CIFAR ResNet-56 (9 blocks per stage, 16-32-64 channels)")
def resnet56(input_shape: tuple[int, ...], num_classes: int, *, width: int = 16) -> nn.Module:
    return _cifar_resnet("resnet56", 9, input_shape, num_classes, width)


@register_model("tiny_resnet", "for tests: CIFAR ResNet-8 of width 4, with projection shortcuts")
def tiny_resnet(input_shape: tuple[int, ...], num_classes: int, *, width: int = 4) -> nn.Module:
    return _cifar_resnet("tiny_resnet", 1, input_shape, num_classes, width)
