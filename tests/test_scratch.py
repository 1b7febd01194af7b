"""A trial's scratch folder: removed at its end, and swept on the node when its worker was
killed before the end (a time budget's last trials, a worker killed for memory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from archsearch.search.scratch import PREFIX, sweep_orphans, trial_folder


def _ended_pid() -> int:
    """The id of a process that has exited, as a killed worker's is."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_folder_holds_the_trial_files_and_is_removed_at_the_end(tmp_path: Path) -> None:
    with trial_folder(tmp_path) as out:
        (out / "model.safetensors").write_bytes(b"weights")
        assert out.parent == tmp_path and out.name.startswith(f"{PREFIX}{os.getpid()}-")
    assert not out.exists()


def test_a_killed_workers_folder_is_removed_by_the_next_trial(tmp_path: Path) -> None:
    orphan = tmp_path / f"{PREFIX}{_ended_pid()}-abc123"
    orphan.mkdir()
    (orphan / "model.safetensors").write_bytes(b"left behind")
    with trial_folder(tmp_path):
        assert not orphan.exists()


def test_live_workers_and_foreign_folders_are_left_alone(tmp_path: Path) -> None:
    live = tmp_path / f"{PREFIX}{os.getppid()}-running"  # a process that is still alive
    unnamed = tmp_path / f"{PREFIX}x7f2k9qz"  # the old unnumbered names, and anything else
    other = tmp_path / "someone-elses-folder"
    for folder in (live, unnamed, other):
        folder.mkdir()
    assert sweep_orphans(tmp_path) == []
    assert live.exists() and unnamed.exists() and other.exists()
