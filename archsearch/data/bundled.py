"""The bundled data sets: MNIST and Fashion-MNIST (IDX files), CIFAR-10, and two that are
always available offline (scikit-learn's digits, synthetic Gaussian classes).

Each loads whole into memory. The test set is the publisher's (or, for ``digits``, a fixed
stratified 20%); the validation set is carved from the training set (see ``parts.py``).
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from archsearch.data.entry import register_dataset
from archsearch.data.parts import RawData
from archsearch.errors import ConfigError, DataNotFoundError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

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
    """A root the user names is used or refused, never replaced: the default only without one."""
    if root is not None:
        return [root, root / torchvision_dir / "raw"]
    return [default] if default is not None else []


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
