"""Where reading a tensor's value on the host costs no wait.

On a CPU a tensor's value is already in host memory; on an accelerator a read (``.item()``,
``float()``, ``.tolist()``) waits for every kernel queued before it. A few places take a
shorter path when a read is free: a live group's survivor check (``GatedModel._survivor``)
and the cost ratio's polynomial (``CostModel.ratio``). They all ask ``free``, so the step loop
has one switch, which ``tests/test_step_loop.py`` turns off to count the reads an
accelerator's step would make.
"""

from __future__ import annotations

import torch

#: device types whose tensors live in host memory
DEVICES: tuple[str, ...] = ("cpu",)


def free(tensor: torch.Tensor) -> bool:
    """Whether reading ``tensor``'s value on the host costs no synchronisation."""
    return tensor.device.type in DEVICES
