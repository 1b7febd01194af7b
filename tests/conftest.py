"""Shared test settings, fixtures and helpers.

Helpers are plain functions (``from conftest import write_space``) where a test calls them
with its own arguments, fixtures where pytest should set up and tear down. Search spaces are
written as files and read by ``load_spec``, and trial configs come from the spec, so tests
exercise the code users run instead of a hand-made copy of it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch
import yaml

if TYPE_CHECKING:
    from archsearch.config import TrialConfig
    from archsearch.space import SearchSpec

# Tests train tiny models: on 2 cores one thread is faster than two fighting over them.
torch.set_num_threads(1)

#: the command line, run as a user runs it
ARCHSEARCH = [sys.executable, "-m", "archsearch.cli"]

#: a search small enough for a test: a tiny MLP on synthetic data, two gates, one CPU a trial
TINY_SPACE: dict[str, Any] = {
    "name": "tiny",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "data": {"name": "synthetic", "options": {"n_samples": 128}},
    "trials": 4,
    "concurrency": 2,
    "sampler": {"name": "random", "seed": 0},
    "resources": {"cpu": 1},
    "train": {"epochs": 2, "finetune_epochs": 0, "batch_size": 32, "gate_lr": 0.1},
    # about 1 s of timing per trial; the searches that test latency turn it on
    "latency": {"runtime": "off"},
    # a Ray task per search that holds a trial's slot; tests/test_reference.py turns it on
    "reference": {"train": False},
    "space": {
        "gate": ["hard_concrete", "arm"],
        "granularity": ["neuron"],
        "penalty.lambda": {"loguniform": [0.01, 1.0]},
    },
}

#: the fixed settings of quick real trials (an MLP on the digits, one epoch) and the gates,
#: granularities and gate options that tests sample from them
TRIAL_SPACE: dict[str, Any] = {
    "name": "trials",
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "data": {"name": "digits"},
    "train": {"epochs": 1, "finetune_epochs": 0, "batch_size": 64, "gate_lr": 0.05},
    "latency": {"runtime": "off"},
    "space": {
        "gate": ["arm", "hard_concrete", "gumbel_softmax", "learned_threshold"],
        "granularity": ["neuron", "weight"],
        "penalty.lambda": {"loguniform": [0.001, 10.0]},
        "arm.k": {"uniform": [3.0, 10.0]},
    },
}


# -- search spaces -----------------------------------------------------------------------------


def tiny_space(name: str = "tiny", **sections: Any) -> dict[str, Any]:
    """``TINY_SPACE`` named ``name``, with whole top-level sections replaced."""
    return {**copy.deepcopy(TINY_SPACE), "name": name, **copy.deepcopy(sections)}


def write_space(folder: Path, raw: dict[str, Any] | str, name: str = "space.yaml") -> Path:
    """A space file in ``folder``: a dict as YAML, a string as it is (for broken files)."""
    path = folder / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def trial_spec(folder: Path, raw: dict[str, Any] | None = None) -> SearchSpec:
    """A space (``TRIAL_SPACE`` by default) read back by ``load_spec``, as the search does."""
    from archsearch.space import load_spec

    return load_spec(write_space(folder, raw or TRIAL_SPACE, name="trial_space.yaml"))


def trial_config(folder: Path, sampled: dict[str, Any]) -> TrialConfig:
    """The config the search runs for a sampled point (``{"gate": "arm", "arm.k": 7.0}``)."""
    return trial_spec(folder).trial_config(sampled)


def search_to_end(folder: Path, spec: SearchSpec) -> tuple[Any, list[str], str]:
    """A real search of ``spec`` in ``folder`` (its MLflow store and Ray state there), to its
    end; returns the outcome, the progress lines and the store's URI."""
    from archsearch.search import run_search

    uri = f"sqlite:///{folder}/mlflow.db"
    lines: list[str] = []
    outcome = run_search(
        spec, tracking_uri=uri, storage=str(folder / "ray"), on_progress=lines.append
    )
    return outcome, lines, uri


def space_error(folder: Path, raw: dict[str, Any]) -> str:
    """The error ``load_spec`` gives for a bad space, checked to be one line."""
    from archsearch.space import SpaceError, load_spec

    with pytest.raises(SpaceError) as caught:
        load_spec(write_space(folder, raw))
    assert "\n" not in str(caught.value)
    return str(caught.value)


# -- processes ---------------------------------------------------------------------------------


@pytest.fixture
def restore_environ() -> Iterator[None]:
    """ray.init and the search set process-wide variables (RAY_AUTH_MODE, Tune's)."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def free_port() -> int:
    """A port nobody listens on: bound, then closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cli(
    folder: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, Path]:
    """``archsearch ARGS`` in ``folder``, in its own session (so ``kill_group`` can end the
    Ray processes it leaves behind), stderr to a fresh log file; returns it and the log."""
    log = folder / f"stderr{len(list(folder.glob('stderr*')))}.txt"
    with log.open("w") as err:
        process = subprocess.Popen(
            [*ARCHSEARCH, *args],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    return process, log


def run_cli_subprocess(
    folder: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 400
) -> subprocess.CompletedProcess:
    """``archsearch ARGS`` in ``folder`` to its end, output captured as text."""
    return subprocess.run(
        [*ARCHSEARCH, *args], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
    )


def wait_for_log(log: Path, pattern: str, process: subprocess.Popen, timeout: float) -> None:
    """Wait until ``pattern`` (a multi-line regex) shows in ``log``; fail if the process ends
    first or the time runs out, with the log's end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, log.read_text(), re.MULTILINE):
            return
        assert process.poll() is None, f"process ended early:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} within {timeout}s:\n{log.read_text()[-3000:]}")


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL a process's whole session group: Ray processes started by a killed driver
    outlive it there."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, a wait for a clean exit, then ``kill_group`` for anything that outlived it."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    kill_group(process)
