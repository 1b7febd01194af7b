"""torchvision's classifiers as ``torchvision/<name>`` models: random init, never downloaded.

Kept apart from ``archsearch.models`` because torchvision's builders have their own rules:
auxiliary heads that exist only in training (GoogLeNet, Inception v3) and input sizes fixed
when the network is built (ViT's position embeddings).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from torch import nn

from archsearch.errors import ConfigError, UnknownNameError
from archsearch.model_import import AUX_WEIGHT_ATTRIBUTE, drop_aux_heads, load_dense_weights

TORCHVISION_PREFIX = "torchvision/"
#: torchvision classifiers with auxiliary heads (``aux_logits``) in training mode
AUX_HEAD_MODELS = ("googlenet", "inception_v3")
#: families whose builder fixes the input size (position embeddings): name prefix -> the
#: builder's keyword. They are built at the data's size, so a ViT trains on 32x32 images as
#: on 224x224 ones (torchvision's default, and the only size its ImageNet weights take).
SIZED_BUILDERS = {"vit_": "image_size"}


def torchvision_models() -> Any:
    """``torchvision.models``, imported here only: it loads torch's compiler stack (1.5 s)."""
    import torchvision.models

    return torchvision.models


def torchvision_names() -> list[str]:
    return torchvision_models().list_models(module=torchvision_models())


def torchvision_builder(tv_name: str) -> Callable[..., nn.Module]:
    """The builder of ``torchvision/<tv_name>``, ``(input_shape, num_classes, **options)``."""
    known = torchvision_names()
    if tv_name not in known:
        raise UnknownNameError(
            f"unknown torchvision classifier {tv_name!r}; choose one of: {', '.join(known)}"
        )
    aux = tv_name in AUX_HEAD_MODELS
    return functools.partial(_aux_model if aux else _model, tv_name)


def _model(
    tv_name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    weights_file: str | os.PathLike[str] | None = None,
) -> nn.Module:
    """Random init: weights are never downloaded, only read from ``weights_file`` if given."""
    model = _build(tv_name, input_shape, num_classes=num_classes)
    _check_channels(model, tv_name, input_shape)
    if weights_file is not None:
        load_dense_weights(model, weights_file, f"torchvision/{tv_name}")
    return model


def _aux_model(
    tv_name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    weights_file: str | os.PathLike[str] | None = None,
    aux_weight: float = 0.0,
) -> nn.Module:
    """GoogLeNet and Inception v3: their training-only auxiliary heads only with a positive
    ``aux_weight``, the weight of each head's loss (torchvision's recipe uses 0.3). Without
    it the heads would only cost training time. A weights file may hold the heads or not."""

    def build(heads: bool) -> nn.Module:
        return _build(
            tv_name, input_shape, num_classes=num_classes, aux_logits=heads, init_weights=True
        )

    model = build(aux_weight > 0 or weights_file is not None)
    _check_channels(model, tv_name, input_shape)
    if weights_file is not None:
        try:
            load_dense_weights(model, weights_file, f"torchvision/{tv_name}")
        except ConfigError:
            if aux_weight > 0:
                raise
            model = build(False)  # a file saved without the heads
            load_dense_weights(model, weights_file, f"torchvision/{tv_name}")
        if not aux_weight:
            drop_aux_heads(model)
    if aux_weight:
        setattr(model, AUX_WEIGHT_ATTRIBUTE, float(aux_weight))
    return model


def _build(tv_name: str, input_shape: tuple[int, ...], **kwargs: Any) -> nn.Module:
    keyword = next((k for p, k in SIZED_BUILDERS.items() if tv_name.startswith(p)), None)
    if keyword is None:
        return torchvision_models().get_model(tv_name, weights=None, **kwargs)
    height, width = input_shape[-2:]
    reason = "the input is not square"
    if height == width:
        kwargs[keyword] = width
        try:
            return torchvision_models().get_model(tv_name, weights=None, **kwargs)
        except AssertionError as error:  # torchvision: "Input shape indivisible by patch size!"
            reason = str(error) or "the side is not a multiple of its patch size"
    raise ConfigError(
        f"model 'torchvision/{tv_name}' cannot be built for input_shape {tuple(input_shape)} "
        f"({reason}); give it square images whose side is a multiple of its patch size (the "
        "number in its name)"
    )


def _check_channels(model: nn.Module, tv_name: str, input_shape: tuple[int, ...]) -> None:
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None and first_conv.in_channels != input_shape[0]:
        raise ConfigError(
            f"model 'torchvision/{tv_name}' takes {first_conv.in_channels} input channels but "
            f"the data has input_shape {input_shape}; use a {first_conv.in_channels}-channel "
            "data set or one of archsearch's own models"
        )
