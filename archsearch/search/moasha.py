"""MOASHA: multi-objective asynchronous successive halving, as a Ray Tune scheduler.

Ray's own schedulers rank one metric; this one ranks two, validation accuracy (max) and the
cost ratio of the current hard masks (min), from the trials' epoch reports (``reports``).
When a trial reaches a rung (``grace_epochs * eta**k`` gated epochs, below ``train.epochs``)
its result is recorded there and it goes on only if it ranks in the top ``ceil(n / eta)`` of
the ``n`` results recorded at that rung; the rule and its tie-break are ``archsearch.rungs``'s
(non-dominated rank, ties by each result's share of the yardstick's box, nothing for a result
below the search's accuracy constraint, by default). Everything else runs as FIFO.

A search with one sampler per stratum (``sampler.stratify``, e.g. per granularity) ranks a
trial at a rung against its own stratum's results only. Ranked against every result, a
structured (neuron) trial loses to the weight-sparse trials that dominate it at equal cost,
and the structured front the strata exist for is never trained: in two 12-minute searches of
``lenet300_fashion.yaml`` 79 of 81 neuron trials were stopped at a rung, each time
(benchmarks/RESULTS.md, "MOASHA on the shipped file, one rung per stratum").

Its state survives a killed driver. Ray Tune (2.x) does not save a scheduler's state in its
experiment checkpoint: ``Tuner.restore`` gets back the scheduler as pickled when the search
started, empty. Callbacks' state it does save, with the trials' own state in the same
snapshot, and restores on resume (``Callback.get_state``/``set_state``). So the rung records
live in a ``RungBook`` the driver installs for one ``fit`` (``live_book``), which the
scheduler reads and writes, and ``RungBookKeeper``, one of the search's callbacks, hands to
Ray's checkpoint and back. (A file of our own in the experiment folder would not do: on
resume Ray copies the folder to its staging area and syncs it back over anything written
there meanwhile.) A decision stands: a trial whose end Ray's last snapshot had not seen runs
again after a resume, and reaching a rung it was recorded at, gets the decision it got first.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from ray import tune
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from archsearch.rungs import DEFAULT_RANK, RungResult, continues, rung_epochs
from archsearch.search.reports import EPOCH_KEY
from archsearch.space import SearchSpec


class RungBook:
    """The scheduler's state: each rung's results in recorded order, and who stopped where."""

    def __init__(self) -> None:
        #: rung epoch -> {trial id: (val accuracy, cost ratio)}
        self.recorded: dict[int, dict[str, RungResult]] = {}
        #: trial id -> the rung epoch it was stopped at
        self.stopped: dict[str, int] = {}
        #: trial id -> its stratum (``sampler.stratify``'s value), when the search has strata
        self.strata: dict[str, str] = {}

    def state(self) -> dict[str, Any]:
        return {
            "rungs": {e: [[t, *v] for t, v in r.items()] for e, r in self.recorded.items()},
            "stopped": dict(self.stopped),
            "strata": dict(self.strata),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.recorded = {
            int(epoch): {t: (float(a), float(c)) for t, a, c in rows}
            for epoch, rows in state.get("rungs", {}).items()
        }
        self.stopped = {t: int(e) for t, e in state.get("stopped", {}).items()}
        # a book saved before strata were recorded: its trials are everyone's peers
        self.strata = {t: str(s) for t, s in state.get("strata", {}).items()}

    def peers(self, epoch: int, stratum: str | None) -> dict[str, RungResult]:
        """The results a trial of ``stratum`` is ranked against at the rung ``epoch``, in
        recorded order: its stratum's (a trial of unknown stratum counts in each), or all."""
        at_rung = self.recorded.get(epoch, {})
        if stratum is None:
            return at_rung
        return {t: r for t, r in at_rung.items() if self.strata.get(t, stratum) == stratum}

    def describe(self) -> str:
        """e.g. ``7 results at rungs 1, 3; 4 trials stopped there``."""
        count = sum(len(r) for r in self.recorded.values())
        rungs = ", ".join(str(e) for e in sorted(self.recorded))
        return f"{count} results at rungs {rungs}; {len(self.stopped)} trials stopped there"


#: the book of the search running in this driver process (see the module docstring)
_LIVE_BOOK: list[RungBook] = []


@contextlib.contextmanager
def live_book(book: RungBook) -> Iterator[None]:
    """Install the book the scheduler keeps its records in, for the length of one ``fit``."""
    _LIVE_BOOK[:] = [book]
    try:
        yield
    finally:
        _LIVE_BOOK.clear()


class RungBookKeeper(tune.Callback):
    """Saves the book with Ray's experiment checkpoint and restores it on resume."""

    def __init__(self, book: RungBook, emit: Callable[[str], None]) -> None:
        self.book = book
        self.emit = emit

    def get_state(self) -> dict[str, Any] | None:
        return self.book.state() if self.book.recorded else None  # None: nothing to save

    def set_state(self, state: dict[str, Any]) -> None:
        self.book.set_state(state)
        self.emit(f"moasha: restored {self.book.describe()}")


class MoashaScheduler(FIFOScheduler):
    """Stops a trial at a rung unless it ranks in the top 1/eta there (``archsearch.rungs``)."""

    # a decision per report, never on a batch of them: a rung is one exact epoch
    _supports_buffered_results = False

    def __init__(
        self,
        grace_epochs: int,
        eta: int,
        epochs: int,
        bin_decades: float,
        rank: str = DEFAULT_RANK,
        stratify: str | None = None,
        accuracy_floor: float | None = None,
    ) -> None:
        super().__init__()
        #: the search's ``val_accuracy`` minimum: a result below it adds nothing to a front
        self.accuracy_floor = accuracy_floor
        #: the config key whose value is a trial's stratum; None: one ranking for all
        self.stratify = stratify
        self.eta = eta
        self.bin_decades = bin_decades
        self.rank = rank
        self.rungs = rung_epochs(grace_epochs, eta, epochs)
        self._own_book = RungBook()  # when no driver installed one (a scheduler on its own)

    @property
    def book(self) -> RungBook:
        return _LIVE_BOOK[0] if _LIVE_BOOK else self._own_book

    @classmethod
    def from_spec(cls, spec: SearchSpec) -> MoashaScheduler:
        s = spec.scheduler
        floors = [c.min for c in spec.constraints if c.metric == "val_accuracy" and c.min]
        return cls(
            s.grace_epochs,
            s.eta,
            spec.base.epochs,
            s.bin_decades,
            s.rank,
            spec.stratify,
            max(floors, default=None),
        )

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        epoch = result.get(EPOCH_KEY)
        if epoch not in self.rungs:
            return TrialScheduler.CONTINUE
        book = self.book
        at_rung = book.recorded.setdefault(int(epoch), {})
        if trial.trial_id in at_rung:  # run again after a resume: the first decision stands
            return (
                TrialScheduler.STOP
                if book.stopped.get(trial.trial_id) == epoch
                else TrialScheduler.CONTINUE
            )
        at_rung[trial.trial_id] = (float(result["val_accuracy"]), float(result["hard_cost_ratio"]))
        stratum = None if self.stratify is None else str(trial.config.get(self.stratify))
        if stratum is not None:
            book.strata[trial.trial_id] = stratum
        peers = book.peers(int(epoch), stratum)
        if continues(
            peers, trial.trial_id, self.eta, self.bin_decades, self.rank, self.accuracy_floor
        ):
            return TrialScheduler.CONTINUE
        book.stopped[trial.trial_id] = int(epoch)
        return TrialScheduler.STOP

    def debug_string(self) -> str:
        return (
            f"MOASHA (eta {self.eta}, rungs at gated epochs {self.rungs}): {self.book.describe()}"
        )
