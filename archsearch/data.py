"""Datasets by name, held in memory as tensors.

Training iterates by slicing tensors (``iterate_batches``) instead of a DataLoader: on a
couple of CPU cores that is many times faster for data this small. Every data set is split
the same way: the test set is the publisher's (or, for ``digits``, a fixed stratified 20%);
the validation set, which the search optimises on, is carved from the *training* set with a
seeded permutation, so the test set is only ever reported.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from archsearch.errors import ConfigError, DataNotFoundError
from archsearch.registry import Registry, check_options, option_defaults

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors with == is not a bool
class DataSplits:
    """Train / validation / test tensors: x float32, normalised, (N, C, H, W); y int64."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    input_shape: tuple[int, ...]
    num_classes: int

    def describe(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        return (
            f"{self.name}: {len(self.train_y)} train / {len(self.val_y)} val / "
            f"{len(self.test_y)} test, input {shape}, {self.num_classes} classes"
        )


@dataclass(frozen=True, eq=False)
class RawData:
    """What a loader returns: images scaled to [0, 1] (N, C, H, W), not yet split or normalised."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int


Loader = Callable[..., RawData]


Geometry = tuple[tuple[int, ...], int]  # (input shape, class count)


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry. A loader is ``(root, *, options)``: its keyword-only args are options.
    Its geometry is fixed, or a function of the options (``geometry_of``), or unknown (None)."""

    name: str
    loader: Loader
    description: str
    fixed_geometry: Geometry | None = None
    geometry_of: Callable[[dict[str, Any]], Geometry] | None = None

    def option_defaults(self) -> dict[str, Any]:
        return option_defaults(self.loader)

    def geometry(self, options: dict[str, Any] | None = None) -> Geometry | None:
        """Input shape and class count without loading, so a search space can build its model
        before any trial starts; None for a data set that has to be loaded to tell."""
        if self.geometry_of is not None:
            return self.geometry_of({**self.option_defaults(), **(options or {})})
        return self.fixed_geometry


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(
    name: str,
    description: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    geometry: Callable[[dict[str, Any]], Geometry] | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator that adds a loader to the registry under ``name``, with its geometry: a fixed
    ``input_shape`` and ``num_classes``, or ``geometry``, a function of the options."""
    fixed = (tuple(input_shape), num_classes) if input_shape and num_classes else None
    return DATASETS.decorator(
        name, lambda loader: DatasetInfo(name, loader, description, fixed, geometry)
    )


def list_datasets() -> list[str]:
    """Registered names, in registration order."""
    return DATASETS.names()


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``; the CLI and config validation read options from it."""
    return DATASETS.get(name)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    **options: Any,
) -> DataSplits:
    """Load data set ``name`` with a validation split carved from its training set by ``seed``."""
    info = get_dataset_info(name)
    if not 0.0 < val_fraction <= 0.5:
        raise ConfigError(f"dataset {name!r}: val_fraction must be in (0, 0.5], got {val_fraction}")
    check_options(DATASETS.kind, name, options, info.option_defaults())
    raw = info.loader(Path(root).expanduser() if root is not None else None, **options)
    return _split(name, raw, val_fraction, seed)


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
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Minibatches by slicing in-memory tensors; the last batch may be smaller."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size}")
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    order = torch.randperm(len(x), generator=generator).to(x.device) if shuffle else None
    for start in range(0, len(x), batch_size):
        if order is None:
            yield x[start : start + batch_size], y[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield x[idx], y[idx.to(y.device)]


def _split(name: str, raw: RawData, val_fraction: float, seed: int) -> DataSplits:
    mean, std = _channel_stats(raw.train_x)
    # In place: the raw tensors are ours, and Fashion-MNIST's copies cost 190 MB each.
    train_all = raw.train_x.float().sub_(mean).div_(std)
    test_x = raw.test_x.float().sub_(mean).div_(std)
    train_idx, val_idx = carve_validation(len(raw.train_y), val_fraction, seed)
    return DataSplits(
        name=name,
        train_x=train_all[train_idx],
        train_y=raw.train_y[train_idx].long(),
        val_x=train_all[val_idx],
        val_y=raw.train_y[val_idx].long(),
        test_x=test_x,
        test_y=raw.test_y.long(),
        input_shape=tuple(raw.train_x.shape[1:]),
        num_classes=raw.num_classes,
    )


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of the whole training set (validation part included).

    Computed before the carve so that normalisation does not move with the seed; pixel
    statistics carry no label information.
    """
    dims = [0, *range(2, x.dim())]
    return x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True).clamp_min(1e-6)


# -- IDX files (MNIST, Fashion-MNIST) -----------------------------------------------------


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (LeCun's MNIST format), gzip-compressed or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0:3] != b"\x00\x00\x08":
        raise DataNotFoundError(
            f"{path} is not an unsigned-byte IDX file; delete it and fetch the data set again"
        )
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx_dir(places: Sequence[Path]) -> dict[str, Path] | None:
    """The four IDX files from the first place that has all of them, raw or gzipped."""
    for place in places:
        found = {}
        for key, stem in IDX_FILES.items():
            candidates = [place / f"{stem}.gz", place / stem]
            found[key] = next((p for p in candidates if p.is_file()), None)
        if all(found.values()):
            return found  # type: ignore[return-value]
    return None


def _idx_places(root: Path | None, torchvision_dir: str, default: Path | None) -> list[Path]:
    places = [root, root / torchvision_dir / "raw"] if root is not None else []
    return places + ([default] if default is not None else [])


def _load_idx(
    name: str,
    root: Path | None,
    torchvision_dir: str,
    default: Path | None,
    download: bool,
    how_to: str,
) -> RawData:
    places = _idx_places(root, torchvision_dir, default)
    files = _find_idx_dir(places)
    if files is None and download:
        _download_idx(name, root, torchvision_dir)
        files = _find_idx_dir(places)
    if files is None:
        looked = ", ".join(str(p) for p in places) or "(nowhere: no data root given)"
        raise DataNotFoundError(
            f"{name}: IDX files ({IDX_FILES['train_x']}[.gz] and the other three) not found "
            f"in {looked}; {how_to}"
        )
    arrays = {key: read_idx(path) for key, path in files.items()}
    return RawData(
        train_x=torch.from_numpy(arrays["train_x"].copy()).unsqueeze(1).float() / 255,
        train_y=torch.from_numpy(arrays["train_y"].astype(np.int64)),
        test_x=torch.from_numpy(arrays["test_x"].copy()).unsqueeze(1).float() / 255,
        test_y=torch.from_numpy(arrays["test_y"].astype(np.int64)),
        num_classes=10,
    )


def _download_idx(name: str, root: Path | None, torchvision_dir: str) -> None:
    """Fetch with torchvision (online machines only); it writes ``root/<Dir>/raw``."""
    if root is None:
        raise ConfigError(f"dataset {name!r}: `download: true` needs a data root to save into")
    import torchvision.datasets  # here, so that offline use never touches it

    dataset_cls = getattr(torchvision.datasets, torchvision_dir)
    dataset_cls(str(root), train=True, download=True)
    dataset_cls(str(root), train=False, download=True)


def _register_idx(
    name: str, description: str, torchvision_dir: str, default: Path | None, how_to: str
) -> None:
    """An IDX data set: MNIST's file format and geometry (28x28 grey images, 10 classes)."""

    def load(root: Path | None, *, download: bool = False) -> RawData:
        return _load_idx(name, root, torchvision_dir, default, download, how_to)

    register_dataset(name, description, input_shape=(1, 28, 28), num_classes=10)(load)


_register_idx(
    "fashion_mnist",
    "Fashion-MNIST, 28x28 grey clothing images, 10 classes",
    "FashionMNIST",
    DEBIAN_FASHION_MNIST,
    "install them with `apt-get install dataset-fashion-mnist`, point --data-root DIR at a "
    "folder holding the IDX files, or set `download: true` with a data root when online",
)
_register_idx(
    "mnist",
    "MNIST, 28x28 grey handwritten digits, 10 classes",
    "MNIST",
    None,
    "point --data-root DIR at a folder holding the IDX files (or DIR/MNIST/raw), "
    "or set `download: true` with a data root when online",
)


# -- CIFAR-10 -----------------------------------------------------------------------------


@register_dataset(
    "cifar10",
    "CIFAR-10, 32x32 colour images, 10 classes (torchvision layout)",
    input_shape=(3, 32, 32),
    num_classes=10,
)
def cifar10(root: Path | None, *, download: bool = False) -> RawData:
    folder = root / "cifar-10-batches-py" if root is not None else None
    if not download and (folder is None or not folder.is_dir()):
        looked = str(folder) if folder is not None else "(nowhere: no data root given)"
        raise DataNotFoundError(
            f"cifar10: cifar-10-batches-py not found in {looked}; point --data-root DIR at the "
            "folder that holds cifar-10-batches-py, or set `download: true` with a data root "
            "when online"
        )
    if root is None:
        raise ConfigError("dataset 'cifar10': `download: true` needs a data root to save into")
    from torchvision.datasets import CIFAR10

    train, test = (CIFAR10(str(root), train=t, download=download) for t in (True, False))

    def images(ds: CIFAR10) -> torch.Tensor:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255

    return RawData(
        train_x=images(train),
        train_y=torch.tensor(train.targets, dtype=torch.int64),
        test_x=images(test),
        test_y=torch.tensor(test.targets, dtype=torch.int64),
        num_classes=10,
    )


# -- always available ---------------------------------------------------------------------


@register_dataset(
    "digits",
    "scikit-learn's bundled 8x8 digits (1797 images, offline)",
    input_shape=(1, 8, 8),
    num_classes=10,
)
def digits(root: Path | None) -> RawData:
    """The test split is a fixed stratified 20%, so it is the same whatever the seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train_idx, test_idx = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return RawData(x[train_idx], y[train_idx], x[test_idx], y[test_idx], num_classes=10)


@register_dataset(
    "synthetic",
    "for tests: Gaussian classes around fixed random images",
    geometry=lambda options: (tuple(options["input_shape"]), options["num_classes"]),
)
def synthetic(
    root: Path | None,
    *,
    n_samples: int = 512,
    input_shape: Sequence[int] = (1, 8, 8),
    num_classes: int = 4,
    data_seed: int = 0,
) -> RawData:
    """Learnable in a few steps, deterministic, instant; a quarter as many test examples.

    Each class is a fixed random image plus noise, brightened by a class-dependent offset:
    the image tells classes apart for an MLP, the brightness survives a CNN's global pooling.
    The generator's seed is ``data_seed`` because ``load_dataset``'s own ``seed`` chooses
    the validation split.
    """
    shape = tuple(input_shape)
    if n_samples < 8 or num_classes < 2 or not all(d > 0 for d in shape):
        raise ConfigError(
            "dataset 'synthetic' needs n_samples >= 8, num_classes >= 2 and a positive "
            f"input_shape, got {n_samples}, {num_classes}, {shape}"
        )
    gen = torch.Generator().manual_seed(data_seed)
    offsets = torch.arange(num_classes).float().div(num_classes).view(-1, *[1] * len(shape))
    centres = torch.rand(num_classes, *shape, generator=gen) + offsets

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=gen)
        return centres[y] + 0.3 * torch.randn(n, *shape, generator=gen), y

    train_x, train_y = draw(n_samples)
    test_x, test_y = draw(max(1, n_samples // 4))
    return RawData(train_x, train_y, test_x, test_y, num_classes)
