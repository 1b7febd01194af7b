"""Reuse, in ARM's antithetic pass, what the step's first pass computed before any gate.

ARM's second forward runs the same batch through the same weights with other gate samples.
Every module that runs before the first gate acts (a LeNet-300-100's first layer when its
units are gated, 88% of its multiply-accumulates; a CNN's stem convolution) computes the same
tensor in both passes, and recomputing it made the antithetic pass cost most of a forward
(benchmarks/RESULTS.md, "ARM's antithetic pass reuses the ungated prefix"). The first pass
records those modules' outputs; the second returns them instead of running the module. The
values are the same objects, so the antithetic loss is bit for bit what recomputing gives.

A module's output is reused only when it cannot differ: a module of a type whose forward is
a function of its inputs and parameters alone (no dropout, no state it reads and moves), its
inputs the very tensors the first pass gave it, unchanged since (their version counters),
and its parameters the same tensors (a weight-granularity gate swaps in a masked weight).
A module whose inputs a gate has touched is run as usual, and so is everything after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

#: leaf modules whose training-mode forward depends on their inputs and parameters alone.
#: BatchNorm qualifies: in training it normalises by the batch's own statistics, and the
#: antithetic pass does not move its running statistics anyway.
DETERMINISTIC = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.Flatten,
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Sigmoid,
    nn.Tanh,
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.LayerNorm,
    nn.GroupNorm,
)


@dataclass
class _Entry:
    """One module's call in the first pass: what it was given, and what it returned."""

    inputs: tuple[torch.Tensor, ...]
    input_versions: tuple[int, ...]
    parameters: tuple[tuple[str, torch.Tensor], ...]
    output: torch.Tensor
    output_version: int

    def still_holds(self, module: nn.Module, args: tuple[Any, ...]) -> bool:
        """Whether ``module(*args)`` now would return ``output`` bit for bit."""
        return (
            len(args) == len(self.inputs)
            and all(a is b for a, b in zip(args, self.inputs, strict=True))
            and all(t._version == v for t, v in zip(self.inputs, self.input_versions, strict=True))
            and all(getattr(module, name) is p for name, p in self.parameters)
            and self.output._version == self.output_version
        )


class UnchangedPrefix:
    """Records, in a step's first pass, the outputs of the modules no gate has reached yet,
    and hands them back in the same step's antithetic pass."""

    def __init__(self, base: nn.Module) -> None:
        self._leaves = [
            m for m in base.modules() if not list(m.children()) and isinstance(m, DETERMINISTIC)
        ]
        self._entries: dict[int, _Entry] = {}
        #: tensors the first pass shares with the antithetic one: the input and reused outputs
        self._shared: dict[int, torch.Tensor] = {}
        self._recording = False

    def attach(self) -> list[RemovableHandle]:
        """Hook every eligible module; call after the gates' hooks, whose changes the last
        hook must see. The caller removes the handles (before copying the network)."""
        handles = []
        for module in self._leaves:
            # first: the output before any gate's hook multiplies it
            handles.append(module.register_forward_hook(self._record_raw, prepend=True))
            # last: the output after every hook, shared on only if no gate changed it
            handles.append(module.register_forward_hook(self._record_final))
        return handles

    @contextlib.contextmanager
    def recording(self, x: torch.Tensor) -> Iterator[None]:
        """Record the first pass's ungated prefix; whatever an earlier step left is dropped."""
        self.clear()
        self._shared = {id(x): x}
        self._recording = True
        try:
            yield
        finally:
            self._recording = False

    @contextlib.contextmanager
    def replaying(self) -> Iterator[None]:
        """Run a pass that returns the recorded outputs where they still hold; clears them
        afterwards, so the first pass's tensors are not kept past the step."""
        patched = []
        try:
            for module in self._leaves:
                entry = self._entries.get(id(module))
                if entry is not None:
                    module.forward = _reusing(module, entry)  # an instance attribute, for now
                    patched.append(module)
            yield
        finally:
            for module in patched:
                del module.forward
            self.clear()

    def clear(self) -> None:
        self._entries = {}
        self._shared = {}

    @property
    def recorded(self) -> int:
        """How many modules the last first pass recorded (for tests and benchmarks)."""
        return len(self._entries)

    def _record_raw(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if not self._recording or not isinstance(output, torch.Tensor):
            return
        if not args or not all(
            isinstance(a, torch.Tensor) and self._shared.get(id(a)) is a for a in args
        ):
            return
        parameters = tuple((name, getattr(module, name)) for name in module._parameters)
        if not all(p is None or isinstance(p, nn.Parameter) for _, p in parameters):
            return  # a gate swapped in a masked weight: the next pass gets another one
        self._entries[id(module)] = _Entry(
            inputs=tuple(args),
            input_versions=tuple(a._version for a in args),
            parameters=parameters,
            output=output,
            output_version=output._version,
        )

    def _record_final(self, module: nn.Module, _args: tuple[Any, ...], output: Any) -> None:
        entry = self._entries.get(id(module)) if self._recording else None
        if entry is not None and output is entry.output:
            self._shared[id(output)] = output


def _reusing(module: nn.Module, entry: _Entry) -> Callable[..., Any]:
    original = type(module).forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not kwargs and entry.still_holds(module, args):
            return entry.output
        return original(module, *args, **kwargs)

    return forward
