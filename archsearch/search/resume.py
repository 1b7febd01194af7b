"""What ``--resume`` needs beyond Ray's own state: how the search was started.

Ray Tune saves the experiment (trials, Optuna's study) under ``<storage>/<name>`` and
``Tuner.restore`` picks it up; beside it, ``archsearch.json`` remembers the run shape
(trials, concurrency, seed), the tracking store and a fingerprint of the space, so a resumed
search continues the search as it was started instead of quietly mixing two.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ray import tune

from archsearch.errors import ArchSearchError
from archsearch.space import SearchSpec

#: the file beside Ray's experiment state that remembers how the search was started
SETTINGS_FILE = "archsearch.json"

#: the flags that override a space file's run shape: ``--trials``, ``--concurrency``, ``--seed``
Overrides = dict[str, int | None]


class ResumeError(ArchSearchError):
    """A --resume that has nothing to resume, or that would change the search."""


def with_overrides(spec: SearchSpec, overrides: Overrides) -> SearchSpec:
    """The spec of a new search with the flags given laid over the file's run shape."""
    for key, value in overrides.items():
        if value is not None and value < (0 if key == "seed" else 1):
            raise ArchSearchError(f"--{key} must be at least {0 if key == 'seed' else 1}")
    return dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})


def fingerprint(spec: SearchSpec) -> str:
    """What a resumed search must not change: the space, the trial settings, the run shape.
    Not the time budget: it counts per run of the command, so a resume may give another."""
    described = {k: v for k, v in spec.describe().items() if k not in ("space_file", "time_budget")}
    text = json.dumps(described, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_settings(spec: SearchSpec, path: Path, uri: str) -> None:
    settings = {
        "space_file": str(Path(spec.source).resolve()),
        "trials": spec.trials,
        "concurrency": spec.concurrency,
        "seed": spec.seed,
        "tracking_uri": uri,
        "fingerprint": fingerprint(spec),
    }
    path.mkdir(parents=True, exist_ok=True)
    (path / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")


def mark_budget_ended(path: Path) -> None:
    """Remember that the time budget ended this search: Ray's state holds it as finished (its
    searcher done, the unstarted trials never to run), so there is nothing to resume."""
    settings_path = path / SETTINGS_FILE
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    settings["ended_by"] = "time budget"
    settings_path.write_text(json.dumps(settings, indent=2) + "\n")


def require_fresh(spec: SearchSpec, path: Path) -> None:
    """A new search must not silently replace a saved one of the same name."""
    if path.is_dir() and tune.Tuner.can_restore(str(path)):
        raise ResumeError(
            f"{path} already holds a search named {spec.name!r}; continue it with --resume, "
            f"or start over after removing that folder (or with another --storage)"
        )


def resumed_settings(
    spec: SearchSpec, path: Path, overrides: Overrides, tracking_uri: str | None
) -> tuple[SearchSpec, str | None]:
    """The search as it was started; flags given again must agree with it."""
    settings_path = path / SETTINGS_FILE
    if not settings_path.is_file() or not tune.Tuner.can_restore(str(path)):
        raise ResumeError(
            f"no search named {spec.name!r} to resume in {path}; start it without --resume "
            f"(or point --storage at the folder that holds it)"
        )
    saved = json.loads(settings_path.read_text())
    if saved.get("ended_by") == "time budget":
        raise ResumeError(
            f"search {spec.name!r} in {path} ended on its time budget, with its front logged; "
            f"there is nothing to resume: start a new one after removing that folder (or "
            f"with another --storage, or another name)"
        )
    for key, value in overrides.items():
        if value is not None and value != saved[key]:
            raise ResumeError(
                f"--{key.replace('_', '-')} {value} differs from the {saved[key]} this search "
                f"started with; --resume continues the search as it was started"
            )
    spec = dataclasses.replace(spec, **{k: saved[k] for k in overrides})
    if fingerprint(spec) != saved["fingerprint"]:
        _refuse_an_earlier_default(spec, saved["fingerprint"])
        raise ResumeError(
            f"{spec.source} changed since the search started ({saved['space_file']}); resuming "
            f"would mix two spaces: restore the file, or start a new search under another name"
        )
    return spec, tracking_uri or saved["tracking_uri"]


#: MOASHA's rung orders that were the default once: a search started then, with no ``rank``
#: in its file, was fingerprinted with that order
EARLIER_DEFAULT_RANKS = ("cost_bins", "nondominated")


def _refuse_an_earlier_default(spec: SearchSpec, saved_fingerprint: str) -> None:
    """A file left as it was still fails the fingerprint when a default it relied on has
    changed since; say which setting brings the search back instead of "the file changed"."""
    if spec.scheduler.name != "moasha":
        return
    for rank in EARLIER_DEFAULT_RANKS:
        scheduler = dataclasses.replace(spec.scheduler, rank=rank)
        if fingerprint(dataclasses.replace(spec, scheduler=scheduler)) == saved_fingerprint:
            raise ResumeError(
                f"{spec.source}: this search started when MOASHA's default rank was {rank}; "
                f"add rank: {rank} to its scheduler to resume it as it was started"
            )
