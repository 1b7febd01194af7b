"""What a trial reports to Tune, and how the driver tells the reports apart.

A trial reports after each gated epoch (an *epoch report*: the gated model's validation
accuracy in eval mode, which is its hardened network's, and the cost ratio of its current
hard masks; no checkpoint) and once at its end (the *final report*: ``metrics.json``'s values,
with the trial's folder as checkpoint). Only a final report is a result: the tracker, Optuna
and the front see nothing else. A trial whose last report is an epoch report was stopped
early: at a MOASHA rung, or by the time budget.

Tune requires the searcher's objectives in every report, so an epoch report carries them
too: ``val_accuracy`` and NaN for the FLOPs, which only a hardened network has. The
``EPOCH_KEY`` marks it; nothing reads an epoch report's objectives as a result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: the gated epoch an epoch report was made after (absent from the final report)
EPOCH_KEY = "archsearch_gated_epoch"

#: what an epoch report carries from the epoch's record (``train.EpochCallback``)
EPOCH_VALUES = ("val_accuracy", "hard_cost_ratio", "expected_cost_ratio")


def epoch_report(record: dict[str, Any], objectives: Iterable[str]) -> dict[str, Any] | None:
    """The report of one epoch record, or None for epochs that are not gated (warm-up,
    fine-tuning: no rung counts them)."""
    if record.get("phase") != "gated":
        return None
    report: dict[str, Any] = dict.fromkeys(objectives, math.nan)
    report.update({key: float(record[key]) for key in EPOCH_VALUES if key in record})
    report[EPOCH_KEY] = int(record["epoch"])
    return report


def stopped_epoch(result: dict[str, Any] | None) -> int | None:
    """The gated epoch of an epoch report; None for a final report or no report at all."""
    epoch = (result or {}).get(EPOCH_KEY)
    return int(epoch) if epoch is not None else None


def is_final(result: dict[str, Any] | None, objectives: Iterable[str]) -> bool:
    """Whether a trial's last report is its final result (not an epoch report, not empty)."""
    result = result or {}
    return EPOCH_KEY not in result and all(key in result for key in objectives)


def at_stop(result: dict[str, Any]) -> dict[str, float]:
    """What a stopped trial had reached: the values of its last epoch report."""
    return {key: float(result[key]) for key in EPOCH_VALUES if key in result}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def trial_error_text(trial: Any) -> str:
    """The error Tune recorded for a trial: the driver-side error file (written just before
    ``on_trial_error``), else the copy in the trial's storage."""
    path = trial.error_file
    if path and Path(path).is_file():
        text = Path(path).read_text()
    else:
        try:
            text = str(trial.get_error() or "")
        except Exception:
            text = ""
    text = _ANSI.sub("", text)
    return text or f"trial {trial.trial_id} failed (Ray recorded no error text)"
