"""The time budget (``--time-budget 30m``, ``time_budget: 30m``): the search ends when it is up.

Tune asks its stopper's ``stop_all`` at every step of its loop; once the budget is spent it
answers yes, and Tune ends the experiment: running trials are stopped where they are
(``TERMINATED`` with their last epoch report, logged as stopped by the time budget) and trials
not yet started stay unstarted. The search then logs its front and ends as a finished one.

The budget counts from the start of this run of the command, so ``--resume`` of a search cut
off by Ctrl-C gets the budget it is given again. Ray pickles the stopper into the experiment
state, and a clock belongs to one driver process anyway, so Ray gets ``BudgetStopper``, a
stand-in that pickles as nothing and asks the budget this driver installed (as
``callbacks.LiveCallbacks`` does for the callbacks).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from ray import tune


class TimeBudget:
    """``seconds`` from ``start()``; None: no limit. ``ended`` once it ran out."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.ended = False
        self._deadline: float | None = None

    def start(self) -> None:
        if self.seconds is not None and self._deadline is None:
            self._deadline = time.monotonic() + self.seconds

    def over(self) -> bool:
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.ended = True
        return self.ended


#: the budget of the search running in this driver process (see BudgetStopper)
_LIVE_BUDGET: list[TimeBudget] = []


class BudgetStopper(tune.Stopper):
    """Tune's stopper: stops no single trial, and everything once the live budget is spent."""

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return bool(_LIVE_BUDGET) and _LIVE_BUDGET[0].over()

    def __reduce__(self) -> tuple[Any, ...]:
        return (BudgetStopper, ())


@contextlib.contextmanager
def live_budget(budget: TimeBudget) -> Iterator[None]:
    """Install the budget ``BudgetStopper`` asks, for the length of one ``fit``."""
    _LIVE_BUDGET[:] = [budget]
    try:
        yield
    finally:
        _LIVE_BUDGET.clear()
