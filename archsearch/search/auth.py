"""Token authentication for joining a Ray cluster, settled before Ray is imported.

A head started with ``ray start --head`` (and a local ``ray.init()``) turns token
authentication on by itself when a token exists; ``ray.init(address=...)`` does not, so a
driver meeting a head in token mode would fail after 20 s of ``InvalidAuthToken``. Setting
Ray's public ``RAY_AUTH_MODE=token`` does the same for the driver, but Ray reads that variable
once, when its native module loads: this runs first thing in ``archsearch.search``, before
any of its modules imports Ray. A token sent to a head without authentication is ignored, and
a local Ray turns token mode on anyway, so the setting changes nothing where it is not needed.
"""

from __future__ import annotations

import os
from pathlib import Path

AUTH_MODE_VARIABLE = "RAY_AUTH_MODE"


def token_auth_if_available() -> bool:
    """Set ``RAY_AUTH_MODE=token`` when it is unset and a token is at hand; True if set here."""
    if AUTH_MODE_VARIABLE in os.environ or not _token_available():
        return False
    os.environ[AUTH_MODE_VARIABLE] = "token"
    return True


def _token_available() -> bool:
    """Where Ray looks for a token: ``$RAY_AUTH_TOKEN``, the file ``$RAY_AUTH_TOKEN_PATH``,
    then ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    files = [Path.home() / ".ray" / "auth_token"]
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        files.insert(0, Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser())
    return any(path.is_file() for path in files)
