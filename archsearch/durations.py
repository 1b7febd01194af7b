"""Durations as users write them: ``30m``, ``90s``, ``1.5h`` (a bare number is seconds).

Used by ``archsearch search --time-budget`` and the space file's ``time_budget``; a leaf so
the command line can parse its flag without loading the search.
"""

from __future__ import annotations

import math
import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([smh]?)\s*$")


def parse_duration(value: str | int | float) -> float:
    """Seconds in a duration; ValueError (a message to show as is) for anything else, or for
    a duration that is not positive."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 30m, 90s or 1.5h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(
                f"expected a duration such as 30m, 90s or 1.5h (s, m or h), got {value!r}"
            )
        seconds = float(match.group(1)) * _UNITS.get(match.group(2) or "s", 1.0)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"expected a duration above zero such as 30m, got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``1h30m``, ``30m``, ``45s``: the shortest exact form to whole seconds."""
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{value}{unit}" for value, unit in parts if value) or "0s"
