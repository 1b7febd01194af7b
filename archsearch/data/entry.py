"""The data set registry: each entry's loader, description, options and geometry.

A loader is ``(root, *, options)``: its keyword-only args are its options. It returns
``RawData`` or ``Parts`` (see ``parts.py``). Its geometry (input shape, class count) is known
without loading where possible, so that a search space can build its model before any trial
starts: fixed, a function of the options, a function of the root and the options (a folder's
class count), or unknown (None: the pre-flight check loads the data once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archsearch.data.parts import Parts, RawData
from archsearch.registry import Registry, option_defaults

Loader = Callable[..., RawData | Parts]

Geometry = tuple[tuple[int, ...], int]  # (input shape, class count)


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry. Geometry: ``fixed_geometry``, or ``geometry_of(options)``, or
    ``root_geometry(root, options)`` for data whose geometry lies in its folder.
    ``options`` overrides the options read from the loader's signature (the user's callables);
    ``open_options``: the loader takes any option (a callable with ``**kwargs``)."""

    name: str
    loader: Loader
    description: str
    fixed_geometry: Geometry | None = None
    geometry_of: Callable[[dict[str, Any]], Geometry] | None = None
    root_geometry: Callable[[Path | None, dict[str, Any]], Geometry] | None = None
    options: dict[str, Any] | None = None
    open_options: bool = False

    def option_defaults(self) -> dict[str, Any]:
        return dict(self.options) if self.options is not None else option_defaults(self.loader)

    def geometry(self, options: dict[str, Any] | None = None) -> Geometry | None:
        """Input shape and class count without loading, so a search space can build its model
        before any trial starts; None for a data set that has to be loaded to tell."""
        if self.geometry_of is not None:
            return self.geometry_of({**self.option_defaults(), **(options or {})})
        return self.fixed_geometry

    def geometry_at(
        self, root: str | Path | None, options: dict[str, Any] | None = None
    ) -> Geometry | None:
        """``geometry`` for data kept at ``root``: a folder's class folders count too."""
        if self.root_geometry is not None:
            folder = Path(root).expanduser() if root is not None else None
            return self.root_geometry(folder, {**self.option_defaults(), **(options or {})})
        return self.geometry(options)


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(
    name: str,
    description: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    geometry: Callable[[dict[str, Any]], Geometry] | None = None,
    root_geometry: Callable[[Path | None, dict[str, Any]], Geometry] | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator that adds a loader to the registry under ``name``, with its geometry: a fixed
    ``input_shape`` and ``num_classes``, or ``geometry``, a function of the options, or
    ``root_geometry``, a function of the data root and the options."""
    fixed = (tuple(input_shape), num_classes) if input_shape and num_classes else None
    return DATASETS.decorator(
        name,
        lambda loader: DatasetInfo(
            name, loader, description, fixed, geometry, root_geometry=root_geometry
        ),
    )


def list_datasets() -> list[str]:
    """Registered names, in registration order."""
    return DATASETS.names()
