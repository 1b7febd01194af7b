"""Timing two models against each other: the settings, the interleaved rounds, the ratio.

The number that matters is the ratio to the dense model measured in the same process. Each
round gives both models about ``round_ms`` of calls, cut into slices of about ``SLICE_MS`` that
alternate between the two (dense, pruned, dense, ... with the other model first in the next
round); a model's time in a round is its fastest slice. A busy machine only ever adds time:
a preemption lands in some slices and not others, so the fastest slice is the model's own
speed, and a clock or cache drift affects both models of a round alike. The median of the
per-round ratios is then stable where blocks timed whole are not: on this project's shared
2-core machine under a load of 3, a model timed against its own copy gave ratios from 0.3 to
3.1 with whole 2 ms blocks and within 0.1 of 1 with 0.5 ms slices, for the same timing budget.
"""

from __future__ import annotations

import copy
import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from archsearch.config import LATENCY_RUNTIMES
from archsearch.errors import ArchSearchError, ConfigError

#: "off" measures nothing; the same names as ``TrialConfig.latency_runtime``
RUNTIMES = LATENCY_RUNTIMES
#: untimed calls of each model before timing; then as many again, timed, to calibrate a slice
WARMUP_CALLS = 3
#: the wall time of one slice: shorter than a scheduler time slice (about 1-4 ms), so most
#: slices run undisturbed, and still thousands of timer resolutions long
SLICE_MS = 0.5

Call = Callable[[], object]
#: a call of a model on its fixed input, per batch size
Runner = Callable[[int], Call]


class LatencyError(ArchSearchError):
    """A model that the chosen runtime cannot run (for example an ONNX export that fails)."""


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured: the runtime, the second batch size and the timing effort."""

    #: one of ``RUNTIMES``; "off" measures nothing
    runtime: str = "onnxruntime"
    #: the second batch size (batch 1 is always measured)
    batch: int = 64
    #: interleaved rounds; the ratio is the median of the per-round ratios
    repeats: int = 7
    #: intra-op threads of the runtime while measuring
    threads: int = 1
    #: each model's share of one round, in milliseconds, timed in slices of ``SLICE_MS``
    round_ms: float = 20.0

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"latency.runtime = {self.runtime!r} is invalid: expected onnxruntime, torch or off"
            )
        for key in ("batch", "repeats", "threads"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(
                    f"latency.{key} = {value!r} is invalid: expected a whole number of at least 1"
                )
        value = self.round_ms
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not 0 < value < math.inf:
            raise ConfigError(
                f"latency.round_ms = {value!r} is invalid: expected a positive number of"
                " milliseconds (each model's share of one timed round)"
            )


@dataclass(frozen=True)
class Comparison:
    """One batch size: per-call medians in ms and the per-round ratios pruned / dense."""

    dense_ms: float
    pruned_ms: float
    ratios: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> float:
        return (max(self.ratios) - min(self.ratios)) / self.ratio


def _block(call: Call, calls: int, sync: Callable[[], None]) -> float:
    """Seconds per call over one slice; synchronised before and after, never inside."""
    sync()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    sync()
    return max(time.perf_counter() - start, 1e-9) / calls


def _compare(
    dense: Call, pruned: Call, settings: LatencySettings, sync: Callable[[], None]
) -> Comparison:
    """Warm up, calibrate each model's calls per slice, then time the interleaved rounds (see
    the module docstring); the model that goes first alternates from round to round."""
    pair = (dense, pruned)
    for _ in range(WARMUP_CALLS):
        dense()
        pruned()
    per_call = [_block(call, WARMUP_CALLS, sync) for call in pair]
    calls = [max(1, round(SLICE_MS / 1000 / seconds)) for seconds in per_call]
    slice_seconds = max(n * seconds for n, seconds in zip(calls, per_call, strict=True))
    slices = max(1, round(settings.round_ms / 1000 / slice_seconds))
    fastest: list[tuple[float, float]] = []
    for round_index in range(settings.repeats):
        best = [math.inf, math.inf]
        for slice_index in range(slices):
            first = (round_index + slice_index) % 2
            for which in (first, 1 - first):
                best[which] = min(best[which], _block(pair[which], calls[which], sync))
        fastest.append((best[0], best[1]))
    return Comparison(
        dense_ms=statistics.median(d for d, _ in fastest) * 1000,
        pruned_ms=statistics.median(p for _, p in fastest) * 1000,
        ratios=tuple(p / d for d, p in fastest),
    )


@contextmanager
def _quiet_collector() -> Iterator[None]:
    """No garbage collection pause inside a timed slice: collect once, then pause it."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch's intra-op thread count for the measurement, the caller's one restored after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def both_batches(
    calls_at: Callable[[int], tuple[Call, Call]],
    settings: LatencySettings,
    sync: Callable[[], None] = lambda: None,
) -> tuple[Comparison, Comparison]:
    """The comparison at batch 1 and at ``settings.batch``."""
    with _quiet_collector():
        single = _compare(*calls_at(1), settings, sync)
        if settings.batch == 1:
            return single, single
        return single, _compare(*calls_at(settings.batch), settings, sync)


def example(input_shape: tuple[int, ...], batch: int, device: torch.device) -> torch.Tensor:
    """The fixed input of one batch size: the same numbers on every call and every run."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn((batch, *input_shape), generator=generator).to(device)


def torch_runner(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device, *, copied: bool = False
) -> Runner:
    """A call per batch size of an evaluation-mode copy on ``device`` (of ``model`` itself when
    it is ``copied`` already); run the calls under ``torch.inference_mode``."""
    module = model if copied else copy.deepcopy(model).to(device).eval()

    def at(batch: int) -> Call:
        x = example(input_shape, batch, device)
        return lambda: module(x)

    return at
