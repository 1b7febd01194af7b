"""Measured latency of a pruned subnetwork, as a ratio to its dense model (issue 10).

FLOPs are a proxy: a weight-granularity subnetwork keeps the dense shapes with zeroed weights,
so its counted FLOPs fall while the dense kernels that run it take as long as ever. What a user
ships is timed instead (``measure``: onnxruntime on the CPU by default, or torch eager), in
rounds interleaved with the dense model so the ratio holds on a noisy machine (``timing``), and,
for weight sparsity, through the CSR sparse path that really skips the zeros (``sparse``).
"""

from archsearch.latency.measure import describe_latency, measure_latency
from archsearch.latency.sparse import (
    SPARSE_DENSITY,
    SparseLinear,
    sparse_latency,
    sparsify,
    weight_density,
)
from archsearch.latency.timing import RUNTIMES, LatencyError, LatencySettings

__all__ = [
    "RUNTIMES",
    "SPARSE_DENSITY",
    "LatencyError",
    "LatencySettings",
    "SparseLinear",
    "describe_latency",
    "measure_latency",
    "sparse_latency",
    "sparsify",
    "weight_density",
]
