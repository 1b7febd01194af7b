"""The user's own network: built by import path, checked, started from trained weights.

``model.name: "mynets:build_net"`` names a callable that builds an ``nn.Module``. It is called
with ``input_shape`` and ``num_classes`` where its signature takes them (by those names, or as
its first two required positional parameters) and with the model options as keywords, so a
plain ``def build_net(input_shape, num_classes, width=8)`` works as it stands and so does a
``nn.Module`` subclass. Whatever it returns must give one score per class: ``check_output``
says so in one line before any training, for bundled models as well. ``load_dense_weights``
starts any model from a trained state dict. ``archsearch.models`` re-exports both.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from archsearch.errors import ArchSearchError, ConfigError, first_line
from archsearch.registry import check_options
from archsearch.user_code import import_callable, keyword_options

_SHAPE, _CLASSES = "input_shape", "num_classes"


@dataclass(frozen=True)
class ImportedBuilder:
    """A user's model callable with what its signature says about how to call it.

    ``positional`` names the parameters that take (input_shape, num_classes) in order when the
    callable does not use those names; ``options`` are its other keyword parameters with their
    defaults (``inspect.Parameter.empty`` when required); ``any_options`` when it takes **kwargs.
    """

    path: str
    function: Callable[..., Any]
    by_name: tuple[str, ...]
    positional: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    any_options: bool = False

    @property
    def description(self) -> str:
        return f"your model, built by {self.path}"

    def __call__(self, input_shape: tuple[int, ...], num_classes: int, **options: Any) -> nn.Module:
        self._check_options(options)
        given = {_SHAPE: input_shape, _CLASSES: num_classes}
        args = [given[_SHAPE], given[_CLASSES]][: len(self.positional)]
        kwargs = {name: given[name] for name in self.by_name}
        try:
            model = self.function(*args, **kwargs, **options)
        except ArchSearchError:
            raise
        except Exception as error:  # the user's code: one line, not its traceback
            raise ConfigError(
                f"model {self.path!r}: building it raised {type(error).__name__}: "
                f"{first_line(error)}"
            ) from None
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"model {self.path!r} returned a {type(model).__name__}, not a torch.nn.Module; "
                "the callable must build the network and return it"
            )
        return model

    def _check_options(self, options: dict[str, Any]) -> None:
        if not self.any_options:
            check_options("model", self.path, options, self.options)
        missing = [k for k, v in self.options.items() if v is inspect.Parameter.empty]
        missing = [k for k in missing if k not in options]
        if missing:
            raise ConfigError(
                f"model {self.path!r} needs option {missing[0]!r} (model.options in a space "
                f"file, --model-option {missing[0]}=VALUE on the command line)"
            )


def import_model(path: str) -> ImportedBuilder:
    """The builder ``path`` names (``"package.module:callable"``); one-line ConfigError when it
    does not import or its signature cannot take the input shape and class count."""
    function = import_callable(path, "model")
    try:
        params = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):  # no signature to read (some builtins): pass both
        return ImportedBuilder(path, function, (), (_SHAPE, _CLASSES), {}, True)
    by_name = tuple(name for name in (_SHAPE, _CLASSES) if any(p.name == name for p in params))
    positional: tuple[str, ...] = ()
    if not by_name:
        positional = _leading_required(path, params)
    return ImportedBuilder(
        path,
        function,
        by_name,
        positional,
        keyword_options(function, skip=by_name + positional),
        any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params),
    )


def _leading_required(path: str, params: list[inspect.Parameter]) -> tuple[str, ...]:
    """Without the names, the first two required positional parameters take (shape, classes)."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p.name for p in params if p.kind in kinds and p.default is p.empty]
    if len(required) == 1:
        raise ConfigError(
            f"model {path!r}: cannot tell whether its parameter {required[0]!r} is the input "
            f"shape or the class count; name it {_SHAPE} or {_CLASSES}"
        )
    return tuple(required[:2])


def check_output(
    model: nn.Module, name: str, input_shape: tuple[int, ...], num_classes: int
) -> None:
    """One-line ConfigError unless ``model`` maps a batch of 2 inputs to (2, num_classes).

    Run in eval mode without gradients on zeros, so it draws no random numbers and changes
    no BatchNorm statistics; the model's mode is restored.
    """
    reference = next(iter(model.parameters()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else None
    shape = tuple(input_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            output = model(torch.zeros(2, *shape, device=device, dtype=dtype or torch.float32))
    except Exception as error:  # the user's forward: one line, not its traceback
        raise ConfigError(
            f"model {name!r} fails on a batch of 2 inputs of shape {shape}: "
            f"{type(error).__name__}: {first_line(error)}"
        ) from None
    finally:
        model.train(was_training)
    got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    if got != (2, num_classes):
        raise ConfigError(
            f"model {name!r} returns {_shown(got)} for a batch of 2 inputs of shape {shape}; "
            f"expected (2, {num_classes}): its last layer must give one score per class"
        )


def _shown(got: tuple[int, ...] | str) -> str:
    return f"shape {got}" if isinstance(got, tuple) else f"a {got}, not a tensor"


def load_dense_weights(model: nn.Module, path: str | os.PathLike[str], name: str) -> None:
    """Load trained weights into ``model`` (named ``name`` in errors), strictly.

    ``.safetensors`` files are read with safetensors; anything else as a PyTorch state dict
    with ``torch.load(weights_only=True)``, which runs no pickled code (a checkpoint dict with a
    ``state_dict`` key is accepted too). Every failure is one ConfigError line.
    """
    where = f"model {name!r}: weights file {str(path)!r}"
    if not os.path.isfile(path):
        raise ConfigError(f"{where} does not exist")
    state = _read_state(path, where)
    problem = _mismatch(model.state_dict(), state)
    if problem:
        raise ConfigError(
            f"{where} does not fit this model ({problem}); check num_classes, the model "
            "options and the architecture"
        )
    model.load_state_dict(state)


def _read_state(path: str | os.PathLike[str], where: str) -> dict[str, torch.Tensor]:
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            state: Any = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and safetensors each raise their own kinds
        raise ConfigError(
            f"{where} cannot be read as weights ({type(error).__name__}: {first_line(error)}); "
            "save model.state_dict() with torch.save or safetensors.torch.save_file"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"{where} holds a {type(state).__name__}, not a state dict of tensors; "
            "save model.state_dict()"
        )
    return state


def _mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """The first differences between the model's state dict and the file's, briefly."""
    problems = []
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k} is {tuple(given[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
        for k in expected
        if k in given and given[k].shape != expected[k].shape
    ]
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
        if keys:
            more = f" and {len(keys) - 2} more" if len(keys) > 2 else ""
            problems.append(f"{label}: {', '.join(keys[:2])}{more}")
    return "; ".join(problems)
