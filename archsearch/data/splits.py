"""Train / validation / test splits, and the one way the training loops draw batches from them.

A split is held in memory as tensors (``TensorSplit``) or streamed from a torch ``Dataset``
(``StreamSplit``). In memory, batches are slices of tensors (``iterate_batches``): on a couple
of CPU cores that is many times faster than a DataLoader's per-example collation for data this
small. Data too large for memory streams through a ``DataLoader``. Both shuffle with the same
call on the trial's generator, so they visit the examples in the same order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from archsearch.errors import ConfigError

#: the split names, in the order ``describe`` lists them
SPLITS = ("train", "val", "test")

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]

_CPU = torch.device("cpu")


def carve_validation(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, validation) of ``n`` training examples; the same seed, the same split."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def iterate_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> Batches:
    """Minibatches by slicing in-memory tensors; the last batch may be smaller."""
    _check_batch_size(batch_size)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    order = torch.randperm(len(x), generator=generator).to(x.device) if shuffle else None
    for start in range(0, len(x), batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx.to(y.device)]


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size}")


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == is not a bool
class TensorSplit:
    """A split held in memory: x float32, normalised, (N, C, H, W); y int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batches(
        self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None
    ) -> Batches:
        return iterate_batches(self.x, self.y, batch_size, shuffle=shuffle, generator=generator)

    def to(self, device: torch.device, num_workers: int) -> TensorSplit:
        """Moved to ``device`` once, for every epoch of the trial."""
        return TensorSplit(self.x.to(device), self.y.to(device))


@dataclass(frozen=True, eq=False)
class StreamSplit:
    """A split read from a torch Dataset batch by batch; each item is ``(x tensor, label)``.

    ``num_workers`` DataLoader processes decode ahead of the model; batches move to ``device``
    one at a time, from pinned memory on CUDA.
    """

    dataset: Dataset
    device: torch.device = _CPU
    num_workers: int = 0

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(
        self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None
    ) -> Batches:
        _check_batch_size(batch_size)
        n = len(self)
        # the same draw as iterate_batches: streamed and in-memory data share one order
        order = torch.randperm(n, generator=generator).tolist() if shuffle else range(n)
        loader = DataLoader(
            self.dataset,
            batch_size=batch_size,
            sampler=order,
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=_worker_seeds(generator),
        )
        for xb, yb in loader:
            yield (
                xb.to(self.device, dtype=torch.float32, non_blocking=True),
                yb.to(self.device, dtype=torch.int64, non_blocking=True),
            )

    def to(self, device: torch.device, num_workers: int) -> StreamSplit:
        """Stays where it is: each batch moves to ``device`` when it is drawn."""
        return StreamSplit(self.dataset, device, num_workers)


def _worker_seeds(generator: torch.Generator | None) -> torch.Generator:
    """The DataLoader's own generator (it seeds its workers), drawn from a copy of the trial's
    so that neither the trial's stream nor torch's global one moves: streamed and in-memory
    trials then draw the same shuffles and the same gate noise."""
    seeds = torch.Generator()
    if generator is None:
        return seeds.manual_seed(0)
    copy = torch.Generator()
    copy.set_state(generator.get_state())
    return seeds.manual_seed(int(torch.randint(2**62, (1,), generator=copy)))


Split = TensorSplit | StreamSplit


@dataclass(frozen=True, eq=False)
class DataSplits:
    """A data set's train / validation / test splits, with its geometry.

    The search optimises on ``val``; ``test`` is only ever reported. ``notes`` say where a
    split came from when that is not obvious (e.g. a test split carved from train/).
    """

    name: str
    train: Split
    val: Split
    test: Split
    input_shape: tuple[int, ...]
    num_classes: int
    notes: tuple[str, ...] = ()

    @property
    def in_memory(self) -> bool:
        return all(isinstance(self.split(s), TensorSplit) for s in SPLITS)

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of: {', '.join(SPLITS)}")
        return getattr(self, name)

    def size(self, split: str) -> int:
        return len(self.split(split))

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
    ) -> Batches:
        """``split``'s minibatches on the data's device (see ``to``); the last may be smaller."""
        return self.split(split).batches(batch_size, shuffle=shuffle, generator=generator)

    def to(self, device: torch.device, num_workers: int = 0) -> DataSplits:
        """In-memory splits moved to ``device``; streamed ones deliver each batch there, read by
        ``num_workers`` DataLoader processes (0: in the training process)."""
        moved = {s: self.split(s).to(device, num_workers) for s in SPLITS}
        return dataclasses.replace(self, **moved)

    def describe(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        text = (
            f"{self.name}: {self.size('train')} train / {self.size('val')} val / "
            f"{self.size('test')} test, input {shape}, {self.num_classes} classes"
        )
        notes = ([] if self.in_memory else ["streamed"]) + list(self.notes)
        return f"{text} ({'; '.join(notes)})" if notes else text

    # In-memory tensors by their old names, for scripts and tests that slice them directly.
    @property
    def train_x(self) -> torch.Tensor:
        return self._tensors("train").x

    @property
    def train_y(self) -> torch.Tensor:
        return self._tensors("train").y

    @property
    def val_x(self) -> torch.Tensor:
        return self._tensors("val").x

    @property
    def val_y(self) -> torch.Tensor:
        return self._tensors("val").y

    @property
    def test_x(self) -> torch.Tensor:
        return self._tensors("test").x

    @property
    def test_y(self) -> torch.Tensor:
        return self._tensors("test").y

    def _tensors(self, split: str) -> TensorSplit:
        held = self.split(split)
        if not isinstance(held, TensorSplit):
            raise TypeError(
                f"{self.name}: the {split} split is streamed, not held in memory; "
                f"draw it with DataSplits.batches({split!r}, batch_size)"
            )
        return held
