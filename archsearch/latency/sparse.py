"""Weight sparsity that is real: CSR sparse Linear layers timed against the dense model.

A weight-granularity subnetwork keeps the dense shapes with zeroed weights, so the dense
kernels that run it take as long as the dense model. The one execution path in torch that
skips the zeros on a CPU is a CSR sparse matmul; ``sparse_latency`` times it. Convolutions stay
dense: torch has no sparse convolution kernel on the CPU.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch
from torch import nn

from archsearch.latency.timing import (
    LatencySettings,
    both_batches,
    example,
    torch_runner,
    torch_threads,
)
from archsearch.model_import import primary_output

#: a Linear whose weight density (nonzero share) is at most this runs as a CSR sparse matmul.
#: The break-even of ``SparseLinear`` against ``nn.Linear``, measured on this project's shared
#: CPU (AMD EPYC, 1 thread, torch 2.14, random masks, interleaved, three runs): 784x300 breaks
#: even at density 0.05-0.08 at batch 1 and 0.15-0.23 at batch 64; 300x100 never wins at batch
#: 1 (1.4x at 1%: the sparse call's fixed cost exceeds the 8-11 us of the dense one) and breaks
#: even at 0.15-0.20 at batch 64. Above 0.2 it loses at every batch measured (1.3x at 0.3 at
#: batch 64), so 0.2 is where the sparse path can start to pay off, at the batched size.
SPARSE_DENSITY = 0.2


def weight_density(module: nn.Module) -> float:
    """The nonzero share of the Linear and convolution weights in ``module`` (itself
    included); 1.0 when it has none. Weight-granularity pruning zeroes entries in place, so
    this is how much of the dense kernel's work is real."""
    weights = [
        m.weight
        for m in module.modules()
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))
    ]
    total = sum(w.numel() for w in weights)
    if not total:
        return 1.0
    return sum(int(torch.count_nonzero(w.detach())) for w in weights) / total


class SparseLinear(nn.Module):
    """A Linear whose weight is a CSR sparse matrix. It computes ``(W @ x.T + b).T`` with
    ``torch.addmm``: on the CPU that is 3-4x faster at batch 64 than ``F.linear`` with the
    same CSR weight, which multiplies the other way round. The weight and bias are
    non-persistent buffers (they follow ``.to``); a CSR tensor cannot be deep-copied."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            self.register_buffer("weight", weight.to_sparse_csr(), persistent=False)
        bias = linear.bias.detach() if linear.bias is not None else weight.new_zeros(len(weight))
        self.register_buffer("bias", bias.unsqueeze(1).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # the common case, without the reshapes: they cost 1-2 us a call
            return torch.addmm(self.bias, self.weight, x.t()).t()
        flat = x.reshape(-1, self.in_features)
        out = torch.addmm(self.bias, self.weight, flat.t()).t()
        return out.reshape(*x.shape[:-1], self.out_features)


def sparsify(model: nn.Module, density: float = SPARSE_DENSITY) -> tuple[nn.Module, int]:
    """An evaluation-mode CPU copy of ``model`` with every Linear of weight density at most
    ``density`` replaced by a ``SparseLinear``, and how many were replaced. Convolutions stay
    dense: torch has no sparse convolution kernel on the CPU. Subclasses of ``nn.Linear`` stay
    too: some are read by their parent rather than called (attention's output projection)."""
    copied = copy.deepcopy(model).cpu().eval()
    names = [
        name
        for name, module in copied.named_modules()
        if name and type(module) is nn.Linear and weight_density(module) <= density
    ]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = copied.get_submodule(parent_name)
        setattr(parent, child, SparseLinear(getattr(parent, child)))
    if type(copied) is nn.Linear and weight_density(copied) <= density:
        return SparseLinear(copied).eval(), 1
    return copied, len(names)


def _computes_the_same(sparse: nn.Module, model: nn.Module, input_shape: tuple[int, ...]) -> bool:
    """Whether the sparse copy gives the model's logits on a fixed batch (within float error)."""
    x = example(input_shape, 2, torch.device("cpu"))
    reference = copy.deepcopy(model).cpu().eval()
    try:
        with torch.inference_mode():
            got, expected = primary_output(sparse(x)), primary_output(reference(x))
        return bool(torch.allclose(got, expected, rtol=1e-4, atol=1e-5))
    except (RuntimeError, TypeError, ValueError, NotImplementedError):
        return False


def sparse_latency(
    model: nn.Module, dense: nn.Module, input_shape: tuple[int, ...], settings: LatencySettings
) -> dict[str, Any]:
    """For a weight-granularity subnetwork: its latency with the sparse Linear layers run as
    CSR matmuls (``sparsify``), as a ratio to ``dense``, in torch eager on the CPU with
    ``settings.threads`` threads, interleaved like ``measure_latency``. {} when no Linear is
    sparse enough (or the runtime is "off"): then the dense kernel is the fastest path; {}
    too when the sparse copy does not compute what ``model`` does (a parent that reads a
    Linear's weight instead of calling it), so no number is reported for a wrong program."""
    if settings.runtime == "off":
        return {}
    sparse, converted = sparsify(model)
    if not converted or not _computes_the_same(sparse, model, input_shape):
        return {}
    cpu = torch.device("cpu")
    sparse_at = torch_runner(sparse, input_shape, cpu, copied=True)  # CSR cannot be copied
    dense_at = torch_runner(dense, input_shape, cpu)
    with torch_threads(settings.threads), torch.inference_mode():
        single, batched = both_batches(lambda b: (dense_at(b), sparse_at(b)), settings)
    return {
        "sparse_latency_ms": single.pruned_ms,
        "sparse_latency_ratio": single.ratio,
        "sparse_latency_ms_batched": batched.pruned_ms,
        "sparse_latency_ratio_batched": batched.ratio,
        "sparse_layers": converted,
    }
