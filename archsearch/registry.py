"""One registry for everything archsearch builds by name: gates, models and data sets.

Each kind keeps its own entry type (``GateInfo``, ``ModelInfo``, ``DatasetInfo``: what a user
needs to know without building one); what they share lives here once: registering under a
unique name, listing in registration order, looking a name up with an error that lists the
choices, and options read from a builder's keyword-only parameters, so the allowed options and
their defaults cannot drift from the code that takes them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any, Generic, Protocol, TypeVar

from archsearch.errors import ConfigError, UnknownNameError


class Entry(Protocol):
    """What a registry entry offers: its name and the options its builder accepts."""

    @property
    def name(self) -> str: ...

    def option_defaults(self) -> dict[str, Any]: ...


T = TypeVar("T", bound=Entry)
F = TypeVar("F", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Entries of one kind by name, in registration order.

    ``kind`` names the kind in messages ("gate", "model", "dataset"); ``see`` is a command that
    lists the choices with more detail, quoted after them. Subclasses may override ``hint`` to
    suggest the name a user probably meant.
    """

    def __init__(self, kind: str, *, see: str = "") -> None:
        self.kind = kind
        self._see = f" (see `{see}`)" if see else ""
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry

    def decorator(self, name: str, make_entry: Callable[[F], T]) -> Callable[[F], F]:
        """A decorator that registers the decorated builder as ``make_entry(builder)``."""

        def add(builder: F) -> F:
            self.register(name, make_entry(builder))
            return builder

        return add

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._entries)

    def entries(self) -> list[T]:
        """Registered entries, in registration order."""
        return list(self._entries.values())

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{self.hint(name)}; "
                f"choose one of: {', '.join(self.names())}{self._see}"
            ) from None

    def hint(self, name: str) -> str:
        """Text after the unknown name, such as `` (did you mean 'x'?)``; none by default."""
        return ""

    def with_options(self, name: str, options: Iterable[str]) -> T:
        """The entry for ``name``, once each of ``options`` is known to be one of its options."""
        entry = self.get(name)
        check_options(self.kind, name, options, entry.option_defaults())
        return entry


def option_defaults(builder: Callable[..., Any]) -> dict[str, Any]:
    """A builder's options: its keyword-only parameters, with their defaults."""
    params = inspect.signature(builder).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def check_options(kind: str, name: str, options: Iterable[str], allowed: Iterable[str]) -> None:
    """A ConfigError naming the first of ``options`` that ``name`` does not accept."""
    known = sorted(allowed)
    for key in options:
        if key not in known:
            raise ConfigError(
                f"{kind} {name!r} has no option {key!r}; its options are: "
                f"{', '.join(known) or '(none)'}"
            )
