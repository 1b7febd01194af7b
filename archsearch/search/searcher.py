"""Ray's OptunaSearch, told the truth about trials that did not run to their end.

Two things Ray's ``OptunaSearch.on_trial_complete`` cannot know, and what it would do:

- **A trial a scheduler stopped.** Tune calls ``on_trial_complete`` with the stopped trial's
  last report, an epoch report. OptunaSearch (Ray 2.x, multi-objective) builds
  ``[result.get(m) for m in metric]`` from it, a list that is never None, so its PRUNED
  branch is unreachable: it tells the study COMPLETE with the rung's values. An epoch report's
  FLOPs are NaN, so Optuna refuses them (Ray logs "The value nan is not acceptable") and the
  trial stays RUNNING in the study for good; were they numbers, a rung's partial result would
  count as a full-fidelity one. Neither is true. Here such a trial is handed on with no result,
  which OptunaSearch tells as ``TrialState.PRUNED``: Optuna's own state for a trial stopped
  early. Samplers do not take a pruned trial for a full-fidelity point: NSGA-II leaves
  it out of its population, TPE (multi-objective) counts it after every completed trial, on
  the bad side; random ignores it.
- **Constraints.** A finished trial's constraint values (``archsearch.constraints``) are set
  on its Optuna trial with ``Trial.set_constraint`` before the study is told, so TPE and
  NSGA-II (which read ``FrozenTrial.constraints``) steer away from infeasible regions. The
  Optuna trial is reached through public API only: the define-by-run space function receives
  it (through Ray's suggest captor, which passes every other attribute through), and keeps its
  ``set_constraint`` until the trial's result arrives. (``constraints_func``, the older way,
  is deprecated since Optuna 5.0.)

And one thing a resumed search knows that Ray's saved state may not: **trials that ended after
Ray's last save.** Ray saves the experiment every few seconds (its own period); a driver killed
between two saves restores a searcher that never suggested the trials started since. Those that
also ended are in MLflow already, so the driver hands their ids over (``live_logged``) and the
searcher suggests that many fewer: the search ends with the trials asked for, not more.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from archsearch.constraints import constraint_values
from archsearch.search.reports import is_final
from archsearch.space import SAMPLERS, SearchSpec
from archsearch.space.start import spread_points

#: sets one constraint value on an Optuna trial (its bound ``set_constraint``)
SetConstraint = Callable[[str, float], None]

#: the trial ids the store held as ended when this driver started; read by a restored
#: searcher, which is unpickled inside ``fit`` and cannot be handed them otherwise
_LIVE_LOGGED: list[frozenset[str]] = []


@contextlib.contextmanager
def live_logged(trial_ids: frozenset[str]) -> Iterator[None]:
    """Tell the searcher of this driver's ``fit`` which trials the store already holds."""
    _LIVE_LOGGED[:] = [trial_ids]
    try:
        yield
    finally:
        _LIVE_LOGGED.clear()


def all_suggested(suggested: Iterable[str], trials: int) -> bool:
    """Whether a searcher that suggested ``suggested`` has reached ``trials``, counting the
    trials the store holds that it never suggested: they ran before Ray's last save knew of
    them (as far as the state it was restored from knows)."""
    logged = _LIVE_LOGGED[0] if _LIVE_LOGGED else frozenset()
    known = set(suggested)
    return len(known) + len(logged - known) >= trials


def make_sampler(
    name: str, seed: int, *, multivariate: bool = False
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a space file names (``sampler.name``), seeded.

    ``multivariate`` (TPE only): one density over the parameters a trial draws together, split
    into the groups that define-by-run trials share (a gate's own options are drawn only in its
    trials). Optuna marks both options experimental; its warnings say nothing a user can act on.
    """
    sampler_class = getattr(optuna.samplers, SAMPLERS[name])
    if not multivariate:
        return sampler_class(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return sampler_class(seed=seed, multivariate=True, group=True)


class _DefineByRun:
    """The space Optuna samples (``SearchSpec.sample``); it also hands over the Optuna trial
    it samples for. A plain object, not a closure: OptunaSearch pickles it on every save."""

    def __init__(self, spec: SearchSpec) -> None:
        self.spec = spec
        self.last: tuple[SetConstraint, optuna.Study] | None = None

    def __call__(self, trial: Any) -> dict[str, Any]:
        self.last = (trial.set_constraint, trial.study)
        return self.spec.sample(trial)


class StudySearch(OptunaSearch):
    """OptunaSearch over a ``SearchSpec``: stopped trials told PRUNED, constraints set."""

    def __init__(self, spec: SearchSpec, *, counts_trials: bool = True) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._define = _DefineByRun(spec)
        self._objectives = list(spec.objectives)
        self._constraints = spec.constraints
        #: the trials to suggest; None when a wrapper counts them (``strata.StratifiedSearch``)
        self._trials = spec.trials if counts_trials else None
        self._set_constraint: dict[str, SetConstraint] = {}
        #: the Optuna study, once the first trial is sampled (for tests and inspection)
        self.study: optuna.Study | None = None
        super().__init__(
            self._define,  # define-by-run: a gate's options are drawn only in its own trials
            metric=self._objectives,
            mode=list(spec.objectives.values()),
            sampler=make_sampler(spec.sampler, spec.seed, multivariate=spec.multivariate),
            # enqueued in the study: run first, counted as the sampler's start-up trials
            points_to_evaluate=spread_points(spec) if spec.start == "spread" else None,
        )

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self._trials is not None and all_suggested(self._ot_trials.keys(), self._trials):
            return Searcher.FINISHED
        config = super().suggest(trial_id)
        if self._define.last is not None:
            self._set_constraint[trial_id], self.study = self._define.last
            self._define.last = None
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if not error and result is not None and not is_final(result, self._objectives):
            result = None  # stopped early: OptunaSearch tells the study PRUNED
        setter = self._set_constraint.pop(trial_id, None)
        if result is not None and self._constraints and setter is not None:
            for key, value in constraint_values(result, self._constraints).items():
                setter(key, value)
        super().on_trial_complete(trial_id, result=result, error=error)
