"""Which MLflow store a command uses, and the file of a local SQLite one.

Apart from ``tracking.store`` (which re-exports these), because it imports no MLflow: a command
that only reads can name its store, and read a local SQLite one straight from its file
(``sqlite_runs``), without paying MLflow's import first. Imports nothing of archsearch.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB = "mlflow.db"


def resolve_tracking_uri(uri: str | None) -> str:
    """The store to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow 3's default of a
    SQLite file in the working directory. SQLite paths become absolute, so Ray's driver,
    ``archsearch ui`` and ``archsearch pareto`` all name the same file whatever their cwd."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"
    path = sqlite_path(uri)
    return f"sqlite:///{path}" if path is not None else uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, absolute; None for any other store."""
    if not uri.startswith("sqlite:///") or uri == "sqlite:///:memory:":
        return None
    return Path(uri[len("sqlite:///") :]).expanduser().absolute()
