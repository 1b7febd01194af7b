"""Helpers every command shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from archsearch.errors import ArchSearchError


def key_values(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` flags; values are read as YAML so numbers and lists keep their types."""
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ArchSearchError(f"{flag} expects KEY=VALUE, got {pair!r}")
        options[key] = yaml.safe_load(value)
    return options
