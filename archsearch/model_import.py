"""The user's own network: built by import path, checked, started from trained weights.

``model.name: "mynets:build_net"`` names a callable that builds an ``nn.Module``. It is called
with ``input_shape`` and ``num_classes`` where its signature takes them (by those names, or as
its first two required positional parameters) and with the model options as keywords, so a
plain ``def build_net(input_shape, num_classes, width=8)`` works as it stands and so does a
``nn.Module`` subclass. Whatever it returns must give one score per class: ``check_output``
says so in one line before any training, for bundled models as well. ``load_dense_weights``
starts any model from a trained state dict. ``archsearch.models`` re-exports both.

Models that return more than logits (GoogLeNet's and Inception's auxiliary heads in training
mode, other tuples, dicts) follow one rule, ``primary_output``: the logits are ``.logits`` of
a named tuple, the first element of any other tuple or list, the ``"out"`` or ``"logits"`` entry
of a dict. Only they feed the loss, the accuracy, FLOPs and export. The other class-score
outputs (``aux_outputs``) add ``aux_loss_weight × cross-entropy`` each when the model has a
positive ``aux_loss_weight`` attribute (off by default; torchvision's ``aux_weight`` option).
"""

from __future__ import annotations

import collections
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
#: the dict keys that name a model's primary output, in order of preference
PRIMARY_KEYS = ("out", "logits")
#: the model attribute that weighs the loss of each auxiliary output (absent or 0: none)
AUX_WEIGHT_ATTRIBUTE = "aux_loss_weight"


def primary_output(output: Any) -> Any:
    """The logits of a model's output, by the one rule in the module docstring; anything
    else is returned as it is (a tensor, or something the caller reports)."""
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        fields = output._fields  # type: ignore[attr-defined]
        return output.logits if "logits" in fields else output[0]
    if isinstance(output, (tuple, list)):
        return output[0] if output else output
    if isinstance(output, dict):
        key = next((k for k in PRIMARY_KEYS if k in output), None)
        return output[key] if key is not None else output
    return output


def aux_outputs(output: Any) -> list[torch.Tensor]:
    """The outputs beside the primary one that are tensors (auxiliary heads' logits); None
    entries (torchvision's when a head is off) are skipped."""
    if isinstance(output, dict):
        primary = primary_output(output)
        rest = [v for v in output.values() if v is not primary]
    elif isinstance(output, (tuple, list)):
        primary = primary_output(output)
        rest = [v for v in output if v is not primary]
    else:
        return []
    return [v for v in rest if isinstance(v, torch.Tensor)]


def aux_loss_weight(model: nn.Module) -> float:
    """The weight of each auxiliary output's loss (0 unless the model asks for one)."""
    return float(getattr(model, AUX_WEIGHT_ATTRIBUTE, 0.0) or 0.0)


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


AUX_HEADS = ("aux1", "aux2", "AuxLogits")


def aux_head_params(model: nn.Module) -> int:
    """Parameters of the auxiliary heads ``drop_aux_heads`` removes: not part of the network
    that is compared with its hardened version."""
    heads = [getattr(model, name, None) for name in AUX_HEADS]
    return sum(p.numel() for head in heads if head is not None for p in head.parameters())


def drop_aux_heads(model: nn.Module) -> bool:
    """Remove torchvision's training-only auxiliary heads (GoogLeNet, Inception v3) from a
    hardened model; True if there were any. The pruning graph is traced in evaluation mode,
    where the heads do not run, so their inputs keep the dense width while the trunk shrinks:
    the hardened model could no longer run in training mode with them."""
    heads = [name for name in AUX_HEADS if getattr(model, name, None)]
    if not heads or not isinstance(getattr(model, "aux_logits", None), bool):
        return False
    for name in heads:
        setattr(model, name, None)
    model.aux_logits = False
    if hasattr(model, AUX_WEIGHT_ATTRIBUTE):
        delattr(model, AUX_WEIGHT_ATTRIBUTE)
    return True


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
    output = primary_output(output)
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
    model.load_state_dict(with_module_versions(model, state))


def with_module_versions(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``state`` carrying ``model``'s per-module version metadata, unless it has its own.

    ``state_dict()`` records each module's ``_version`` in a ``_metadata`` attribute that
    safetensors does not store; some modules need it to load (torchvision's MNASNet refuses a
    state dict without it). The versions are those of the code that built ``model``, which is
    the code that wrote the weights when both come from this install.
    """
    if getattr(state, "_metadata", None) is not None:
        return state
    versioned: Any = collections.OrderedDict(state)
    versioned._metadata = getattr(model.state_dict(), "_metadata", None)
    return versioned


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
