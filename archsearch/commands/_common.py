"""Helpers every command shares."""

from __future__ import annotations

import argparse
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


def add_tracking_uri(parser: argparse.ArgumentParser, what: str = "MLflow store") -> None:
    """The one --tracking-uri flag every MLflow-facing command shares."""
    parser.add_argument(
        "--tracking-uri",
        default=None,
        metavar="URI",
        help=f"{what} (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this folder)",
    )
