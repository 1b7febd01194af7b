"""Data sets by name: a registered one, or the user's own callable named by import path."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from archsearch.data.entry import DATASETS, DatasetInfo
from archsearch.data.parts import Parts, normalised, splits_from_parts
from archsearch.data.splits import DataSplits
from archsearch.data.user import callable_info
from archsearch.errors import ConfigError
from archsearch.registry import check_options
from archsearch.user_code import is_import_path


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name`` (for ``"pkg.module:callable"``, an entry made for that
    callable); the CLI and config validation read options from it."""
    if is_import_path(name):
        return callable_info(name)
    return DATASETS.get(name)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    **options: Any,
) -> DataSplits:
    """Load data set ``name`` with a validation split carved from its training set by ``seed``
    (unless the data set brings its own validation split)."""
    info = get_dataset_info(name)
    if not 0.0 < val_fraction <= 0.5:
        raise ConfigError(f"dataset {name!r}: val_fraction must be in (0, 0.5], got {val_fraction}")
    if not info.open_options:
        check_options(DATASETS.kind, name, options, info.option_defaults())
    loaded = info.loader(Path(root).expanduser() if root is not None else None, **options)
    parts = loaded if isinstance(loaded, Parts) else normalised(loaded)
    return splits_from_parts(name, parts, val_fraction, seed)
