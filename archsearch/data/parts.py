"""From what a loader returns to ``DataSplits``: normalising, carving validation, deciding
between memory and streaming.

A loader returns ``RawData`` (bundled sets: tensors in [0, 1], normalised here with the
training set's channel statistics) or ``Parts`` (image folders and the user's data sets:
tensors or torch Datasets, already in the form the model takes). Either way the validation
split, unless given, is carved from the *training* split with the trial's seed, so the test
split is only ever reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from archsearch.data.splits import DataSplits, Split, StreamSplit, TensorSplit, carve_validation
from archsearch.errors import ConfigError, first_line

#: decoded data up to this size is held in memory as tensors; larger data streams
IN_MEMORY_BYTES = 2 * 2**30

#: a split as a loader hands it over: tensors (x, y) or a Dataset of (x, label) items
Part = tuple[torch.Tensor, torch.Tensor] | Dataset


@dataclass(frozen=True, eq=False)
class RawData:
    """What a loader returns: images scaled to [0, 1] (N, C, H, W), not yet split or normalised."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int


@dataclass(frozen=True, eq=False)
class Parts:
    """What a loader returns when it normalises itself: the splits it has (``val`` None: carve
    it from ``train``), their geometry, and notes for ``describe``."""

    train: Part
    val: Part | None
    test: Part
    input_shape: tuple[int, ...]
    num_classes: int
    notes: tuple[str, ...] = ()


def splits_from_parts(name: str, parts: Parts, val_fraction: float, seed: int) -> DataSplits:
    """The DataSplits of ``parts``, with validation carved from train by ``seed`` if missing."""
    train, val = parts.train, parts.val
    if val is None:
        train_idx, val_idx = carve_validation(_length(train), val_fraction, seed)
        train, val = subset(parts.train, train_idx), subset(parts.train, val_idx)
    return DataSplits(
        name=name,
        train=_split(train),
        val=_split(val),
        test=_split(parts.test),
        input_shape=tuple(parts.input_shape),
        num_classes=parts.num_classes,
        notes=parts.notes,
    )


def normalised(raw: RawData) -> Parts:
    """Bundled data normalised by the whole training set's channel statistics."""
    mean, std = channel_stats(raw.train_x)
    # In place: the raw tensors are ours, and Fashion-MNIST's copies cost 190 MB each.
    train_x = raw.train_x.float().sub_(mean).div_(std)
    test_x = raw.test_x.float().sub_(mean).div_(std)
    return Parts(
        train=(train_x, raw.train_y),
        val=None,
        test=(test_x, raw.test_y),
        input_shape=tuple(raw.train_x.shape[1:]),
        num_classes=raw.num_classes,
    )


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the whole training set (validation part included).

    Computed before the carve so that normalisation does not move with the seed; pixel
    statistics carry no label information.
    """
    dims = [0, *range(2, x.dim())]
    return x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True).clamp_min(1e-6)


def subset(part: Part, indices: torch.Tensor) -> Part:
    """The examples of ``part`` at ``indices``, held the way ``part`` is."""
    if isinstance(part, tuple):
        x, y = part
        return x[indices], y[indices]
    return Subset(part, indices.tolist())


def materialise(dataset: Dataset, what: str, num_workers: int = 0) -> tuple[torch.Tensor, ...]:
    """Every item of ``dataset`` read once into tensors (x float32, y int64); ``what`` names
    the data in errors, which are one line even when the user's ``__getitem__`` raised."""
    xs, ys = [], []
    loader = DataLoader(dataset, batch_size=256, num_workers=num_workers)
    try:
        for xb, yb in loader:
            xs.append(xb.float())
            ys.append(torch.as_tensor(yb).long())
    except Exception as error:  # the user's dataset, or an image file PIL cannot read
        raise ConfigError(
            f"{what}: reading it failed: {type(error).__name__}: {first_line(error)}"
        ) from None
    return torch.cat(xs), torch.cat(ys)


def fits_in_memory(examples: int, input_shape: tuple[int, ...], in_memory: bool | str) -> bool:
    """``in_memory``: true, false, or "auto" (decoded float32 data under ``IN_MEMORY_BYTES``)."""
    if in_memory not in (True, False, "auto"):
        raise ConfigError(f"in_memory must be true, false or auto, got {in_memory!r}")
    if in_memory != "auto":
        return bool(in_memory)
    per_example = 4 * int(torch.tensor(input_shape).prod())
    return examples * per_example < IN_MEMORY_BYTES


def _length(part: Part) -> int:
    return len(part[1]) if isinstance(part, tuple) else len(part)  # type: ignore[arg-type]


def _split(part: Part) -> Split:
    if isinstance(part, tuple):
        x, y = part
        return TensorSplit(x, y.long())
    return StreamSplit(part)
