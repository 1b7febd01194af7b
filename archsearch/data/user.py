"""The user's own data: ``data.name: "pkg.module:callable"`` returning torch Datasets.

The callable is called with ``root`` (the data root, as a string) when its signature takes it,
plus the data options as keywords, and returns ``(train, test)``, ``(train, val, test)`` or a
dict with those keys: torch Datasets whose items are ``(x tensor, int label)``, already in the
form the model takes (archsearch does not normalise them). Without ``val`` the validation
split is carved from ``train`` by the trial's seed. The input shape comes from the first
sample; the class count from the train set's ``classes`` attribute, else its largest label + 1.

``in_memory`` (true, false or "auto") is archsearch's option, not passed on: data that fits
(see ``parts.IN_MEMORY_BYTES``) is read once into tensors, anything else streams through a
DataLoader, which keeps the Datasets' own per-epoch randomness (augmentation).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from archsearch.data.entry import DatasetInfo
from archsearch.data.parts import Parts, fits_in_memory, materialise
from archsearch.errors import ArchSearchError, ConfigError, first_line
from archsearch.user_code import import_callable, keyword_options

_SHAPES = "(train, test), (train, val, test) or a dict with keys train, test and optionally val"


def callable_info(path: str) -> DatasetInfo:
    """A registry entry for the callable at ``path``: its options are its keyword parameters
    (other than ``root``) plus ``in_memory``; its geometry is known only once it has loaded."""
    function = import_callable(path, "data set")
    params = inspect.signature(function).parameters.values()
    takes_root = any(p.name == "root" for p in params)
    open_options = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    options = {**keyword_options(function, ("root",)), "in_memory": "auto"}

    def load(root: Path | None, *, in_memory: bool | str = "auto", **kwargs: Any) -> Parts:
        _check_call(path, function, options, kwargs, root, takes_root)
        if takes_root:
            kwargs["root"] = str(root) if root is not None else None
        try:
            returned = function(**kwargs)
        except ArchSearchError:
            raise
        except Exception as error:
            raise ConfigError(
                f"data set {path!r} raised {type(error).__name__}: {first_line(error)}"
            ) from None
        return parts_of(path, returned, in_memory)

    return DatasetInfo(
        path, load, f"your data set {path}", options=options, open_options=open_options
    )


def _check_call(
    path: str,
    function: Callable[..., Any],
    options: dict[str, Any],
    given: dict[str, Any],
    root: Path | None,
    takes_root: bool,
) -> None:
    if root is not None and not takes_root:
        raise ConfigError(
            f"data set {path!r}: a data root is set but {function.__name__} has no `root` "
            "parameter; drop data.root (--data-root) or add the parameter"
        )
    for name, default in options.items():
        if default is inspect.Parameter.empty and name not in given:
            raise ConfigError(
                f"data set {path!r}: option {name!r} is required "
                f"(data.options.{name} in a space file, --data-option {name}=... for train)"
            )


def parts_of(path: str, returned: Any, in_memory: bool | str) -> Parts:
    """What the callable returned, checked and held in memory or streamed."""
    splits = _named_splits(path, returned)
    shapes = {key: _sample_shape(path, key, ds) for key, ds in splits.items()}
    shape = shapes["train"]
    for key, other in shapes.items():
        if other != shape:
            raise ConfigError(
                f"data set {path!r}: {key} samples have shape {list(other)} but train samples "
                f"have {list(shape)}; every split must give the model the same input shape"
            )
    total = sum(len(ds) for ds in splits.values())  # type: ignore[arg-type]
    if fits_in_memory(total, shape, in_memory):
        held = {k: materialise(ds, f"data set {path!r} ({k})") for k, ds in splits.items()}
        labels = torch.cat([y for _, y in held.values()])
        classes = _classes(path, splits["train"], labels)
        _check_labels(path, labels, classes)
        parts: dict[str, Any] = held
    else:
        classes = _classes(path, splits["train"], None)
        parts = dict(splits)
    return Parts(
        train=parts["train"],
        val=parts.get("val"),
        test=parts["test"],
        input_shape=shape,
        num_classes=classes,
    )


def _named_splits(path: str, returned: Any) -> dict[str, Dataset]:
    keys = set(returned) if isinstance(returned, dict) else set()
    if keys in ({"train", "test"}, {"train", "val", "test"}):
        splits = dict(returned)
    elif isinstance(returned, tuple | list) and len(returned) in (2, 3):
        keys = ("train", "test") if len(returned) == 2 else ("train", "val", "test")
        splits = dict(zip(keys, returned, strict=True))
    else:
        raise ConfigError(f"data set {path!r} returned {_what(returned)}; expected {_SHAPES}")
    for key, ds in splits.items():
        if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
            raise ConfigError(
                f"data set {path!r}: its {key} split is {_what(ds)}, not a torch Dataset "
                "(an object with __len__ and __getitem__)"
            )
        if len(ds) == 0:
            raise ConfigError(f"data set {path!r}: its {key} split is empty")
    return splits


def _sample_shape(path: str, key: str, dataset: Dataset) -> tuple[int, ...]:
    """The shape of the first item's x, once the item is known to be (x tensor, int label)."""
    try:
        item = dataset[0]
    except Exception as error:
        raise ConfigError(
            f"data set {path!r}: reading {key}[0] raised {type(error).__name__}: "
            f"{first_line(error)}"
        ) from None
    ok = isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], torch.Tensor)
    if not ok or not _is_label(item[1]):
        raise ConfigError(
            f"data set {path!r}: {key}[0] is {_what(item)}; expected an (x tensor, int label) pair"
        )
    return tuple(item[0].shape)


def _is_label(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.is_floating_point()
    return not isinstance(value, bool) and hasattr(value, "__index__")  # int, numpy integers


def _classes(path: str, train: Dataset, labels: torch.Tensor | None) -> int:
    """From a ``classes`` attribute (looked for through Subsets), else from the labels: those
    read into memory, the train set's ``targets``, or (streaming) one pass over its items."""
    dataset: Any = train
    while isinstance(dataset, Subset) and not hasattr(dataset, "classes"):
        dataset = dataset.dataset
    if hasattr(dataset, "classes"):
        count = len(dataset.classes)
    else:
        if labels is None:
            targets = getattr(train, "targets", None)
            labels = torch.as_tensor(targets) if targets is not None else _scan_labels(train)
        count = int(labels.max()) + 1
    if count < 2:
        raise ConfigError(f"data set {path!r} has {count} class; a classifier needs at least 2")
    return count


def _scan_labels(dataset: Dataset) -> torch.Tensor:
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]


def _check_labels(path: str, labels: torch.Tensor, classes: int) -> None:
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise ConfigError(
            f"data set {path!r}: labels run from {low} to {high} but there are {classes} "
            f"classes; labels must be 0 .. {classes - 1}"
        )


def _what(value: Any) -> str:
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    if isinstance(value, dict):
        return f"a dict with keys {', '.join(map(str, value))}"
    kind = type(value).__name__
    return f"{'an' if kind[0].lower() in 'aeiou' else 'a'} {kind}"
