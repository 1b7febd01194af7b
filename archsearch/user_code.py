"""The user's own code, named by import path: ``"package.module:callable"``.

Models and data sets that are not bundled come in this way. The module is found as
``python -m`` would find it: from the folder the command runs in, then ``PYTHONPATH`` and the
installed packages. Every failure is one line saying what could not be imported and how to
make it importable, never an import traceback.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from archsearch.errors import ConfigError, first_line

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def is_import_path(name: str) -> bool:
    """True for ``"pkg.module:attr"``: the spelling that means the user's own code."""
    return ":" in name


def import_callable(path: str, what: str) -> Callable[..., Any]:
    """The callable ``path`` names; ``what`` says what it is for, in errors (e.g. "model")."""
    if not _IMPORT_PATH.match(path):
        raise ConfigError(
            f"{what} {path!r}: expected an import path 'package.module:function' "
            "(e.g. 'mynets:build_net')"
        )
    module_name, _, attr = path.partition(":")
    _search_working_folder()
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(
            f"{what} {path!r}: cannot import module {module_name!r} ({first_line(error)}); "
            f"run from the folder that holds it or add that folder to PYTHONPATH"
        ) from None
    except Exception as error:  # the user's module raised while importing
        raise ConfigError(
            f"{what} {path!r}: importing {module_name!r} raised "
            f"{type(error).__name__}: {first_line(error)}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{what} {path!r}: module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{what} {path!r}: {attr!r} is a {type(target).__name__}, not callable")
    return target


def keyword_options(function: Callable[..., Any], skip: tuple[str, ...]) -> dict[str, Any]:
    """The options a user's callable takes: its parameters other than ``skip`` that can be
    passed by keyword, with their defaults (``inspect.Parameter.empty`` when required)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {
        p.name: p.default
        for p in inspect.signature(function).parameters.values()
        if p.kind in kinds and p.name not in skip
    }


def _search_working_folder() -> None:
    """``python -m`` puts the working folder first on the path; a console script does not."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
