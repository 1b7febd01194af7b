"""A trial's scratch folder, and the sweep of folders whose worker was killed.

A trial writes its files to a temporary folder that Tune copies as its checkpoint. When
Ray kills the worker (the time budget ends, a scheduler's stop arrives while the actor is
torn down, memory runs out), the ``with`` block that would delete it never ends, and the
folder stays in the node's temporary directory for good. The folder's name carries the
worker's process id, so the next trial on that node removes the folders of processes
that no longer exist; a live worker's folder is never touched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "archsearch-trial-"


@contextmanager
def trial_folder(root: Path | None = None) -> Iterator[Path]:
    """A new folder for one trial's files, removed at the end; stale ones are swept first."""
    parent = Path(root) if root is not None else Path(tempfile.gettempdir())
    sweep_orphans(parent)
    with tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-", dir=parent) as out:
        yield Path(out)


def sweep_orphans(parent: Path) -> list[Path]:
    """Remove the trial folders under ``parent`` whose worker process has ended."""
    removed = []
    for folder in parent.glob(f"{PREFIX}*-*"):
        pid = _owner(folder)
        if pid is None or _alive(pid):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _owner(folder: Path) -> int | None:
    """The process id in a folder's name; None for names this module did not make."""
    owner = folder.name[len(PREFIX) :].split("-", 1)[0]
    return int(owner) if owner.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to sweep
        return True
    return True
