"""FLOPs of a (hardened) model, counted by fvcore, in the convention of docs/gates.md.

One counter for every result, so numbers from different trials, gates and granularities
compare: fvcore's ``FlopCountAnalysis`` on the module in eval mode for one example, where one
multiply-accumulate is one flop. Operators fvcore skips are uncounted by design when they are
cheap (adds, activations, pooling), but a skipped operator that multiplies matrices would
make a model look free, so that is an error instead of a silent zero.
"""

from __future__ import annotations

import importlib.metadata
import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from archsearch.errors import ConfigError, FlopCountError

with warnings.catch_warnings():
    # fvcore scripts a loss function at import time, which torch now calls deprecated.
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

COUNTER = "fvcore.FlopCountAnalysis"
CONVENTION = "one multiply-accumulate = one flop (fvcore)"

#: Substrings of operator names that do multiply-accumulate work; fvcore skipping one is an error.
MATMUL_LIKE = (
    "matmul", "mm", "bmm", "baddbmm", "addmm", "einsum", "dot", "mv", "outer",
    "conv", "linear", "bilinear", "attention", "lstm", "gru", "rnn",
)  # fmt: skip


@dataclass(frozen=True)
class FlopReport:
    """A FLOPs count with what is needed to reproduce it (docs/gates.md, "FLOPs")."""

    total: int
    #: module name -> flops of the operators it runs itself (leaf Conv2d/Linear/BatchNorm).
    per_layer: dict[str, int]
    input_shape: tuple[int, ...]
    counter: str = COUNTER
    counter_version: str = field(default_factory=lambda: importlib.metadata.version("fvcore"))
    convention: str = CONVENTION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as written into ``subnetwork.json``."""
        out = asdict(self)
        out["input_shape"] = list(self.input_shape)
        return out


def _sdpa_flop(inputs: list[Any], outputs: list[Any]) -> int:
    """scaled_dot_product_attention: Q @ K^T then weights @ V, as fvcore counts matmuls.

    fvcore 0.1.5 predates this operator; without a handle ViT-style models would lose their
    attention products (the error below would stop them instead).
    """
    q, k, v = (get_shape(inputs[i]) for i in range(3))
    batch, length, dim = math.prod(q[:-2]), q[-2], q[-1]
    return batch * length * k[-2] * (dim + v[-1])


#: Handles this torch needs beyond fvcore's defaults (conv and linear are already covered:
#: tracing still emits aten::_convolution and aten::linear, which fvcore 0.1.5 knows).
EXTRA_HANDLES = {"aten::scaled_dot_product_attention": _sdpa_flop}


def count_flops(
    model: nn.Module,
    input_shape: tuple[int, ...],
    *,
    densities: Mapping[str, float] | None = None,
) -> FlopReport:
    """Count ``model``'s flops for one example of ``input_shape`` (no batch dimension).

    ``densities`` maps layer names to their fraction of non-zero weights (weight granularity):
    those layers' counts are scaled by it, since zeroed weights do no multiply-accumulates.
    """
    shape = tuple(int(d) for d in input_shape)
    self_counts = _self_counts(model, shape)
    scaled = _apply_densities(self_counts, densities or {}, model)
    per_layer = {name: count for name, count in scaled.items() if count}
    return FlopReport(total=sum(per_layer.values()), per_layer=per_layer, input_shape=shape)


def count_params(model: nn.Module) -> int:
    """All parameters, zeros included (the dense size)."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero_params(model: nn.Module) -> int:
    """Parameters that are not exactly zero: the size after weight-granularity pruning."""
    return sum(int(torch.count_nonzero(p)) for p in model.parameters())


def _analyse(model: nn.Module, shape: tuple[int, ...]) -> FlopCountAnalysis:
    reference = next(iter(model.parameters()), None)
    if reference is None:
        reference = next(iter(model.buffers()), torch.zeros(()))
    dtype = reference.dtype if reference.is_floating_point() else torch.float32
    example = torch.zeros(1, *shape, device=reference.device, dtype=dtype)
    analysis = FlopCountAnalysis(model, example)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    for op_name, handle in EXTRA_HANDLES.items():
        analysis.set_op_handle(op_name, handle)
    return analysis


def _self_counts(model: nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    """Per module, the flops of operators it runs itself (its total minus its children's)."""
    modes = {m: m.training for m in model.modules()}  # restore per module: mixed modes exist
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            analysis = _analyse(model, shape)
            by_module = analysis.by_module()
            _check_skipped(analysis.unsupported_ops(), type(model).__name__)
    finally:
        for module, training in modes.items():
            module.training = training
    counts = {}
    for name, module in model.named_modules():
        children = (f"{name}.{child}" if name else child for child, _ in module.named_children())
        counts[name] = int(by_module.get(name, 0) - sum(by_module.get(c, 0) for c in children))
    return counts


def _check_skipped(skipped: Mapping[str, int], model_name: str) -> None:
    costly = sorted(
        op
        for op in skipped
        if any(word in op for word in MATMUL_LIKE) and "upsample" not in op  # interpolation
    )
    if costly:
        raise FlopCountError(
            f"fvcore cannot count {', '.join(costly)} in {model_name}, which does "
            "multiply-accumulates; use layers it counts (nn.Linear, nn.Conv2d, torch.matmul) "
            "or register a handle in archsearch.pruning.flops.EXTRA_HANDLES"
        )


def _apply_densities(
    counts: dict[str, int], densities: Mapping[str, float], model: nn.Module
) -> dict[str, int]:
    scaled = dict(counts)
    for name, density in densities.items():
        if name not in counts:
            raise ConfigError(
                f"densities name layer {name!r}, which {type(model).__name__} does not have; "
                "use names from model.named_modules()"
            )
        if not 0.0 <= density <= 1.0:
            raise ConfigError(f"density of layer {name!r} must be in [0, 1], got {density}")
        scaled[name] = round(counts[name] * density)
    return scaled
