"""The checker behind every one-line space file error: ``<file>: <key>: <what was expected>``.

A few lines by hand rather than a schema library: pydantic's messages would have to be
translated back into these one-liners key by key, which takes more code than the checks.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, NoReturn

from archsearch.config import TrialConfig
from archsearch.errors import ConfigError
from archsearch.space.spec import SpaceError

_TYPE_WORDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    dict: "a mapping",
    list: "a list",
    type(None): "null",
}


class Check:
    """Type and key checks that fail with the file's name and the key's dotted path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> NoReturn:
        raise SpaceError(f"{self.file}: {key}: {message}")

    def mapping(
        self, raw: Any, key: str, fields: dict[str, Any], required: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """``raw`` as a mapping holding only ``fields``, each of its declared type."""
        if not isinstance(raw, dict):
            self.fail(key, f"expected a mapping, got {show(raw)}")
        for name in raw:
            if name not in fields:
                known = ", ".join(map(str, fields))
                self.fail(_join(key, name), f"unknown key; expected one of: {known}")
            self.typed(raw[name], _join(key, name), fields[name])
        for name in required:
            if name not in raw:
                self.fail(_join(key, name), "missing; it is required")
        return raw

    def typed(self, value: Any, key: str, hint: Any) -> Any:
        if not _matches(value, hint):
            self.fail(key, f"expected {_hint_words(hint)}, got {show(value)}")
        return value

    def setting(self, base: TrialConfig, field_name: str, value: Any, key: str) -> TrialConfig:
        """``base`` with one field changed, checked by TrialConfig; errors name ``key``."""
        self.typed(value, key, typing.get_type_hints(TrialConfig)[field_name])
        try:
            return dataclasses.replace(base, **{field_name: value})
        except ConfigError as error:
            self.fail(key, str(error))


def _join(key: str, name: Any) -> str:
    """A dotted key path: ``_join("data", "root")`` is ``data.root``."""
    return f"{key}.{name}" if key else str(name)


def show(value: Any) -> str:
    """A value as a message quotes it: its type and repr."""
    return f"{type(value).__name__} {value!r}" if value is not None else "nothing (null)"


def _matches(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is Any:
        return True
    if origin is not None:
        return isinstance(value, origin)
    if hint is float:  # ints are numbers too; bools are not
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _hint_words(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_hint_words(arg) for arg in typing.get_args(hint))
    return _TYPE_WORDS.get(typing.get_origin(hint) or hint, str(hint))
