"""``imagefolder``: the user's images in torchvision's ImageFolder layout.

``root/train/<class>/<image>`` is required; ``root/val/`` and ``root/test/`` are optional and
must hold the same class folders. Without ``val/`` the validation split is carved from train/
by the trial's seed (as for every data set); without ``test/`` a fixed 20% of train/ (seed 0,
the same for every trial) is the test split, and ``describe()`` says so. Images are resized
(shorter side) and centre-cropped to ``image_size``, or kept at their size when they all share
it; they are normalised per channel by ``mean`` / ``std``, computed on the training images
unless given. Data that fits (``in_memory: auto``) is decoded once into tensors; larger data
is decoded batch by batch through a DataLoader.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from archsearch.data.entry import Geometry, register_dataset
from archsearch.data.parts import Parts, channel_stats, fits_in_memory, materialise, subset
from archsearch.data.splits import carve_validation
from archsearch.errors import ConfigError, DataNotFoundError

#: without test/, this share of train/ (seed 0, fixed) is held out as the test split
TEST_FRACTION = 0.2
#: streamed data's channel statistics are computed on at most this many training images
STATS_IMAGES = 5000
_NAME = "imagefolder"


def _extensions() -> tuple[str, ...]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return IMG_EXTENSIONS


def _images(folder: Path) -> list[Path]:
    ext = _extensions()
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in ext)


def _classes(root: Path, split: str) -> list[str]:
    """The class folders of ``root/split``, each checked to hold at least one image."""
    folder = root / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise DataNotFoundError(
            f"{_NAME}: {folder} has no class folders; expected {folder}/<class>/<image>"
        )
    for name in classes:
        if not _images(folder / name):
            raise DataNotFoundError(
                f"{_NAME}: {folder / name} has no images (looked for {', '.join(_extensions())})"
            )
    return classes


def scan(root: Path | None) -> dict[str, list[str]]:
    """The splits present under ``root`` and their classes; every layout error, one line."""
    if root is None:
        raise ConfigError(
            f"dataset {_NAME!r} needs a data root: data.root in the space file or --data-root DIR"
        )
    if not root.is_dir():
        raise DataNotFoundError(f"{_NAME}: data root {root} does not exist or is not a folder")
    if not (root / "train").is_dir():
        raise DataNotFoundError(
            f"{_NAME}: no train/ folder in {root}; expected {root}/train/<class>/<image> "
            "(and optionally val/ and test/ alike)"
        )
    found = {s: _classes(root, s) for s in ("train", "val", "test") if (root / s).is_dir()}
    train = found["train"]
    if len(train) < 2:
        raise ConfigError(
            f"{_NAME}: {root / 'train'} has {len(train)} class folder ({train[0]}); "
            "a classifier needs at least 2"
        )
    for split, classes in found.items():
        if classes != train:
            missing, extra = sorted(set(train) - set(classes)), sorted(set(classes) - set(train))
            raise ConfigError(
                f"{_NAME}: {root / split} does not have the class folders of train/ "
                f"(missing: {', '.join(missing) or 'none'}; extra: {', '.join(extra) or 'none'})"
            )
    return found


def _image_size(
    root: Path, splits: Sequence[str], options: dict[str, Any], every: bool
) -> tuple[int, int]:
    """(height, width) every image will have: ``image_size``, or the size they all share
    (read from the headers of ``every`` image, or of the first one only: a quick look)."""
    size = options["image_size"]
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"{_NAME}: image_size must be a positive integer, got {size!r}")
        return size, size
    from PIL import Image

    sizes: dict[tuple[int, int], Path] = {}
    for split in splits:
        for path in sorted((root / split).glob("*/*")):
            if path.suffix.lower() in _extensions():
                with Image.open(path) as image:
                    sizes.setdefault(image.size, path)
                if not every:
                    break
    if len(sizes) > 1:
        (a, first), (b, second) = list(sizes.items())[:2]
        raise ConfigError(
            f"{_NAME}: images differ in size ({first.name} is {a[0]}x{a[1]}, {second.name} is "
            f"{b[0]}x{b[1]}); set image_size to resize and crop them all to one size"
        )
    width, height = next(iter(sizes))
    return height, width


def _channels(options: dict[str, Any]) -> int:
    return 1 if options["grayscale"] else 3


def geometry(root: Path | None, options: dict[str, Any]) -> Geometry:
    """From the class folders and ``image_size`` (or an image's header): nothing decoded."""
    found = scan(root)
    assert root is not None
    height, width = _image_size(root, ["train"], options, every=False)
    return (_channels(options), height, width), len(found["train"])


@register_dataset(
    _NAME,
    "your images: DIR/train/<class>/<image> (and optionally val/, test/), ImageFolder layout",
    root_geometry=geometry,
)
def imagefolder(
    root: Path | None,
    *,
    image_size: int | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    grayscale: bool = False,
    in_memory: bool | str = "auto",
) -> Parts:
    options = {"image_size": image_size, "grayscale": grayscale}
    found = scan(root)
    assert root is not None
    channels, classes = _channels(options), len(found["train"])
    height, width = _image_size(root, list(found), options, every=True)
    folders = {s: _folder(root / s, options) for s in found}
    notes = ["val: carved from train/"] if "val" not in found else []
    pool, test = folders["train"], folders.get("test")
    if test is None:
        rest, held_out = carve_validation(len(pool), TEST_FRACTION, seed=0)
        pool, test = subset(pool, rest), subset(pool, held_out)
        notes.append(f"test: a fixed {TEST_FRACTION:.0%} of train/, as there is no test/")
    splits = {"train": pool, "val": folders.get("val"), "test": test}
    total = sum(len(ds) for ds in splits.values() if ds is not None)
    shape = (channels, height, width)
    if fits_in_memory(total, shape, in_memory):
        held = {k: materialise(ds, f"{_NAME} {k}") for k, ds in splits.items() if ds is not None}
        given = _given_stats(mean, std, channels)
        stats = given or channel_stats(held["train"][0])
        parts = {k: ((x.sub_(stats[0]).div_(stats[1])), y) for k, (x, y) in held.items()}
    else:
        stats = _given_stats(mean, std, channels) or _streamed_stats(splits["train"], channels)
        for ds in folders.values():
            ds.transform = _transform(options, stats)
        parts = dict(splits)  # type: ignore[arg-type]
    return Parts(
        train=parts["train"],
        val=parts.get("val"),
        test=parts["test"],
        input_shape=shape,
        num_classes=classes,
        notes=tuple(notes),
    )


def _folder(path: Path, options: dict[str, Any]) -> Dataset:
    from torchvision.datasets import ImageFolder

    mode = "L" if options["grayscale"] else "RGB"
    return ImageFolder(str(path), transform=_transform(options, None), loader=_Opener(mode))


class _Opener:
    """ImageFolder's loader: the image converted to ``mode`` (a class, so workers can pickle it)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, path: str) -> Any:
        from PIL import Image

        with Image.open(path) as image:
            return image.convert(self.mode)


def _transform(options: dict[str, Any], stats: tuple[torch.Tensor, torch.Tensor] | None) -> Any:
    from torchvision import transforms

    steps: list[Any] = []
    if options["image_size"] is not None:
        size = options["image_size"]
        steps += [transforms.Resize(size), transforms.CenterCrop(size)]
    steps.append(transforms.ToTensor())
    if stats is not None:
        mean, std = stats
        steps.append(transforms.Normalize(mean.flatten().tolist(), std.flatten().tolist()))
    return transforms.Compose(steps)


def _given_stats(
    mean: list[float] | None, std: list[float] | None, channels: int
) -> tuple[torch.Tensor, torch.Tensor] | None:
    if mean is None and std is None:
        return None
    for key, values in (("mean", mean), ("std", std)):
        ok = isinstance(values, list) and len(values) == channels
        if not ok or not all(isinstance(v, int | float) for v in values):  # type: ignore[union-attr]
            raise ConfigError(
                f"{_NAME}: {key} must be a list of {channels} numbers (one per channel), "
                f"got {values!r}; give both mean and std, or neither to compute them"
            )
    if min(std) <= 0:  # type: ignore[type-var]
        raise ConfigError(f"{_NAME}: std must be positive, got {std}")
    shape = (1, channels, 1, 1)
    return torch.tensor(mean).view(shape), torch.tensor(std).view(shape)


@torch.no_grad()
def _streamed_stats(train: Dataset, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel mean and std over (a seeded sample of at most ``STATS_IMAGES``) training images,
    summed in float64 so that a pass in batches matches ``channel_stats`` on the whole."""
    n = len(train)  # type: ignore[arg-type]
    sample = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:STATS_IMAGES]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for xb, _ in DataLoader(subset(train, sample.sort().values), batch_size=256):
        x = xb.double().transpose(0, 1).reshape(channels, -1)
        total += x.sum(1)
        squares += (x * x).sum(1)
        count += x.shape[1]
    mean = total / count
    var = (squares - count * mean * mean) / max(1, count - 1)
    shape = (1, channels, 1, 1)
    return mean.float().view(shape), var.clamp_min(0).sqrt().float().clamp_min(1e-6).view(shape)
