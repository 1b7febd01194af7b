"""Fused per-element gate math at weight granularity: one loop forward, one loop backward.

A weight-granularity gate has one value per weight, so its arithmetic (noise, stretch, clamp,
keep probability, the masked weight, and their backward) is a dozen element-wise passes over
as many values as the network has weights, and autograd keeps several intermediates for the
backward. Here each gate's masked weight is a custom autograd ``Function``
(``masked_weight``) built from two pure per-element formulas, its forward and its backward,
each compiled by ``torch.compile`` into one loop (inductor writes C++ on a CPU, Triton on a
GPU). The forward also returns the keep probability, so the penalty's surrogate costs no
pass of its own. The forward keeps only what is dear to recompute (the sigmoid of the noisy
logit: an exp per weight); the backward rebuilds the rest (stretch, clamp mask, straight-
through step) from it.

The noise is drawn outside the compiled code by torch's generator, as the gate's ``sample``
draws it, so the fused path gives the same numbers as the eager formulas from the same random
state, up to float rounding (``tests/test_fused_gates.py``). On a CPU these loops are bound by
their transcendentals, and inductor's vectorised log costs several times torch's own on the
2-vCPU machine, so the formulas keep logs out of the loops (hard concrete's two sigmoids share
one exp and a sqrt; Gumbel's logistic noise is taken eagerly, as ``sample`` takes it).

``set_mode`` (or ``$ARCHSEARCH_FUSED_GATES``) chooses: ``"compile"`` (the default),
``"eager"`` (the same ``Function`` with its formulas run op by op: for checking them, slower
than ``off`` on a CPU) or ``"off"`` (the gates' own ``sample`` times the weight, the code
before this module). Where compilation is unavailable or fails, the process switches to
``off`` and one warning line says so. Compiled formulas live as long as the process, so the
trials a Ray worker runs one after another compile once (inductor also caches its builds on
disk, across processes): measured on the 2-vCPU machine, ~2-5 s to import the compiler and
~0.1-0.3 s per formula with a warm cache, ~1-2 s per formula cold.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.autograd.function import once_differentiable

MODES: tuple[str, ...] = ("compile", "eager", "off")
#: gates with fewer groups stay eager: a compiled call's fixed cost (~0.1 ms forward and
#: backward, measured on the 2-vCPU machine) matched the passes it saved at 16,384 weights
MIN_GROUPS = 16384
#: environment variable that sets the mode a process starts in
MODE_ENV = "ARCHSEARCH_FUSED_GATES"

_state: dict[str, Any] = {"mode": None, "warned": set()}


def set_mode(mode: str) -> None:
    """Choose how weight-granularity gates compute their masked weights (see the module doc)."""
    if mode not in MODES:
        raise ValueError(f"fused gate mode must be one of {', '.join(MODES)}, got {mode!r}")
    _state["mode"] = mode


def mode() -> str:
    """The current mode: ``set_mode``'s, else ``$ARCHSEARCH_FUSED_GATES``, else compile."""
    if _state["mode"] is None:
        chosen = os.environ.get(MODE_ENV, "compile").strip().lower() or "compile"
        if chosen not in MODES:
            _warn("mode", f"{MODE_ENV}={chosen!r} is not one of {', '.join(MODES)}; using compile")
            chosen = "compile"
        _state["mode"] = chosen
    return _state["mode"]


def enabled() -> bool:
    """Whether gates should take the fused path at all (every mode but ``off``)."""
    return mode() != "off"


def _warn(kind: str, message: str) -> None:
    """One line on stderr, once per process and ``kind``, in the form the CLI's warnings take."""
    if kind not in _state["warned"]:
        _state["warned"].add(kind)
        print(f"archsearch: warning: {message}", file=sys.stderr, flush=True)


class Formula:
    """A pure per-element function of tensors, compiled on first use in ``compile`` mode.

    ``dynamic=True`` compiles one kernel for every layer size. A compilation that fails
    (no C++ compiler, no Triton on a GPU, a Python torch.compile does not support) switches
    the whole process to eager with one warning; an error in the inputs themselves is raised
    by the eager run, as without compilation.
    """

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self._compiled: Callable[..., Any] | None = None

    def __call__(self, *args: Any) -> Any:
        if mode() != "compile":
            return self.function(*args)
        try:
            if self._compiled is None:
                self._compiled = torch.compile(self.function, dynamic=True, fullgraph=True)
                with _quiet_extension_finder():
                    return self._compiled(*args)
            return self._compiled(*args)
        except Exception as error:  # any failure to compile falls back to eager
            result = self.function(*args)  # raises here if the inputs are at fault
            _state["mode"] = "off"
            lines = str(error).strip().splitlines() or [""]
            _warn(
                "compile",
                f"compiling the fused gate math failed ({type(error).__name__}: "
                f"{lines[0][:200]}); gates run eagerly (slower, same results)",
            )
            return result


@contextlib.contextmanager
def _quiet_extension_finder() -> Iterator[None]:
    """The first compilation imports torch's C++ extension builder, which logs a warning
    when it finds no CUDA toolkit; that says nothing about gates on a CPU, so it is not
    printed into every trial's output."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def formula(function: Callable[..., Any]) -> Formula:
    """Decorator: a per-element gate formula, compiled on first use (``Formula``)."""
    return Formula(function)


class _MaskedWeight(torch.autograd.Function):
    """(weight * z, keep probability) from ``forward(weight, *inputs) -> (masked, keep,
    *kept)``; gradients from ``backward(grad, grad_keep, weight, *inputs, *kept)``.

    ``kept`` holds what is dear to recompute (a sigmoid of the noise: an exp and a log per
    element); the backward rebuilds the rest (the stretch, the clamp's mask, the
    straight-through step) from it. The keep probability comes out of the same pass so the
    penalty's surrogate costs no pass of its own, forward or backward."""

    @staticmethod
    def forward(ctx: Any, pair: tuple[Formula, Formula], weight: torch.Tensor, *inputs: Any):
        masked, keep, *kept = pair[0](weight, *inputs)
        ctx.backward_formula = pair[1]
        ctx.save_for_backward(weight, *inputs, *kept)
        return masked, keep

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor, grad_keep: torch.Tensor) -> tuple[Any, ...]:
        # grad arrives in whatever layout the layer's backward left it (a transposed matmul
        # result for a Linear weight): the compiled loop reads it as it is, no copy first
        grads = ctx.backward_formula(grad, grad_keep, *ctx.saved_tensors)
        return (None, *grads)


def masked_weight(
    pair: tuple[Formula, Formula], weight: torch.Tensor, *inputs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gated weight and the gate's keep probability from a (forward, backward) pair.

    ``inputs`` are tensors (parameters, noise, 0-d schedules). The forward formula returns
    the masked weight, the keep probability and the tensors its backward needs besides the
    inputs; the backward takes the gradients of both outputs and returns one gradient (or
    None) for the weight and for each input. Without autograd (ARM's antithetic pass,
    ``torch.no_grad``) only the forward formula runs.
    """
    needs_grad = torch.is_grad_enabled() and (
        weight.requires_grad or any(t.requires_grad for t in inputs)
    )
    if not needs_grad:
        masked, keep, *_ = pair[0](weight, *inputs)
        return masked, keep
    return _MaskedWeight.apply(pair, weight, *inputs)


#: per gate, the keep probability its last fused forward computed, until it is asked for
_KEEP: weakref.WeakKeyDictionary[torch.nn.Module, tuple[Any, ...]] = weakref.WeakKeyDictionary()


def _versions(gate: torch.nn.Module) -> tuple[int, ...]:
    return tuple(t._version for t in (*gate.parameters(), *gate.buffers()))


def remember_keep(gate: torch.nn.Module, keep: torch.Tensor, scores: Any) -> None:
    """Hold the keep probability a forward computed for ``gate``'s next
    ``keep_probability(scores)`` call (the training step's penalty)."""
    _KEEP[gate] = (keep, scores, _versions(gate))


def recall_keep(gate: torch.nn.Module, scores: Any) -> torch.Tensor | None:
    """The held keep probability, once, if nothing it depends on changed since: the same
    ``scores`` object and no parameter or buffer of the gate written to (an optimizer step,
    a schedule). Otherwise None, and the gate computes it afresh."""
    entry = _KEEP.pop(gate, None)
    if entry is None or not torch.is_grad_enabled():
        return None
    keep, seen, versions = entry
    if seen is not scores or versions != _versions(gate):
        return None
    return keep
