"""The one way archsearch writes an ONNX graph: what ``export`` ships and what ``latency``
times must be the same file, or the measured latency is not the shipped model's.

The TorchScript-based exporter (``dynamo=False``): the same operators as the torch.export one
on these graphs, in a tenth of the time, in smaller files (``export`` verifies every file it
writes against the module).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

import torch
from torch import nn

#: the batch the graph is traced with; 2 because torch.export treats a batch of 1 as constant
EXAMPLE_BATCH = 2
INPUT_NAME, OUTPUT_NAME = "input", "logits"


@contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """The ONNX exporter prints its IR graph from C++ when it fails: the user gets one line."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def write_onnx(module: nn.Module, example: torch.Tensor, target: str | BinaryIO) -> None:
    """``module`` as an ONNX graph with a dynamic batch axis, into a path or a byte buffer;
    the exporter's own errors propagate (each caller words them for its user)."""
    with warnings.catch_warnings(), _native_stdout_silenced():
        # the TorchScript-based exporter is deprecated in favour of dynamo=True (see above)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            module,
            (example,),
            target,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            dynamo=False,
        )
