"""``measure_latency``: a pruned model against its dense one, as the user would ship it.

By default each model is exported to ONNX and run in onnxruntime on the CPU; ``torch`` eager,
on the CPU or a GPU, is the other runtime. See ``timing`` for how the two are compared.
"""

from __future__ import annotations

import copy
import functools
import io
import platform
from typing import Any

import torch
from torch import nn

from archsearch.errors import first_line
from archsearch.latency.timing import (
    Call,
    LatencyError,
    LatencySettings,
    Runner,
    both_batches,
    example,
    torch_runner,
    torch_threads,
)
from archsearch.onnx_graph import EXAMPLE_BATCH, write_onnx


def _onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """The model as the user would ship it: an ONNX graph with a dynamic batch axis, exported
    from an evaluation-mode CPU copy (the caller's model is left as it was)."""
    module = copy.deepcopy(model).cpu().eval()
    buffer = io.BytesIO()
    try:
        write_onnx(module, example(input_shape, EXAMPLE_BATCH, torch.device("cpu")), buffer)
    except Exception as error:
        raise LatencyError(
            f"latency: the model cannot be exported to ONNX for onnxruntime"
            f" ({first_line(error)}); set latency_runtime to torch to time it in eager torch"
        ) from error
    return buffer.getvalue()


def _onnx_runner(model: nn.Module, input_shape: tuple[int, ...], threads: int) -> Runner:
    """One onnxruntime session, single-threaded unless asked; returns a call per batch size."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.log_severity_level = 3  # no warnings about the traced output shape
    session = onnxruntime.InferenceSession(
        _onnx_bytes(model, input_shape), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def at(batch: int) -> Call:
        feed = {name: example(input_shape, batch, torch.device("cpu")).numpy()}
        return lambda: session.run(None, feed)

    return at


@functools.cache
def _cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one, else what platform says."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _describe(runtime: str, settings: LatencySettings, device: torch.device) -> str:
    """What measured: runtime and version, where, threads, batches and the machine."""
    batches = f"batch 1 and {settings.batch}"
    if device.type == "cuda":
        return f"{runtime} cuda {torch.cuda.get_device_name(device)}, {batches}"
    threads = f"{settings.threads} thread{'s' if settings.threads != 1 else ''}"
    cpu = _cpu_name()
    return f"{runtime} CPU, {threads}, {batches}" + (f", {cpu}" if cpu else "")


def measure_latency(
    model: nn.Module,
    dense: nn.Module,
    input_shape: tuple[int, ...],
    settings: LatencySettings,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Time ``model`` against ``dense`` in ``settings.runtime``, interleaved, at batch 1 and
    ``settings.batch``; a flat dict of metrics ({} when the runtime is "off").

    onnxruntime always runs on the CPU (``device`` is ignored); the torch runtime runs on
    ``device`` (default CPU). The caller's modules are never changed: copies are measured.
    """
    if settings.runtime == "off":
        return {}
    device = torch.device("cpu") if device is None else torch.device(device)
    if settings.runtime == "onnxruntime":
        import onnxruntime

        pruned_at = _onnx_runner(model, input_shape, settings.threads)
        dense_at = _onnx_runner(dense, input_shape, settings.threads)
        single, batched = both_batches(lambda b: (dense_at(b), pruned_at(b)), settings)
        runtime = f"onnxruntime {onnxruntime.__version__}"
        where = torch.device("cpu")
    else:
        pruned_at = torch_runner(model, input_shape, device)
        dense_at = torch_runner(dense, input_shape, device)
        on_gpu = device.type == "cuda"
        sync = (lambda: torch.cuda.synchronize(device)) if on_gpu else (lambda: None)
        with torch_threads(settings.threads), torch.inference_mode():
            single, batched = both_batches(lambda b: (dense_at(b), pruned_at(b)), settings, sync)
        runtime = f"torch {torch.__version__.split('+')[0]}"
        where = device
    return {
        "latency_ms": single.pruned_ms,
        "dense_latency_ms": single.dense_ms,
        "latency_ratio": single.ratio,
        "latency_ms_batched": batched.pruned_ms,
        "dense_latency_ms_batched": batched.dense_ms,
        "latency_ratio_batched": batched.ratio,
        "latency_spread": single.spread,
        "latency": single.ratio,
        "latency_runtime": _describe(runtime, settings, where),
    }


def describe_latency(measured: dict[str, Any]) -> str | None:
    """One line for a person, from ``measure_latency``'s metrics (None when not measured):
    ``43.2% of dense at batch 1 (12.3 us against 28.4 us), 38.0% batched (spread 3%;
    onnxruntime 1.32.0 CPU, 1 thread, batch 1 and 64)``."""
    if measured.get("latency_ratio") is None:
        return None
    return (
        f"{100 * measured['latency_ratio']:.1f}% of dense at batch 1 "
        f"({1000 * measured['latency_ms']:.1f} us against "
        f"{1000 * measured['dense_latency_ms']:.1f} us), "
        f"{100 * measured['latency_ratio_batched']:.1f}% batched "
        f"(spread {100 * measured.get('latency_spread', 0.0):.0f}%; "
        f"{measured.get('latency_runtime', '?')})"
    )
