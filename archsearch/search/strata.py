"""One sampler per stratum (``sampler.stratify``): each value of a searched choice, e.g. each
granularity, gets an Optuna study of its own and an equal share of the trials.

Why: a multi-objective sampler ranks every trial against one front. Over both granularities
of LeNet-300-100 that front is the weight-sparse one (a weight mask keeps more accuracy per
FLOP than a structured one), so TPE's "good" set held mostly weight trials and it proposed
few neuron trials: 8-17 of 41-48 in four 30-minute searches (benchmarks/RESULTS.md, "Front
quality"), too few for a structured front. Here each stratum's study sees only its own
trials, so it ranks a neuron trial against the neuron front, and the trials are dealt in turn
(the stratum with the fewest suggestions next, ties in the file's order), so no stratum
starves. Each study is a ``StudySearch``: stopped trials are told PRUNED, constraints set.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher

from archsearch.search.searcher import StudySearch, all_suggested
from archsearch.space import SearchSpec


class StratifiedSearch(Searcher):
    """A ``StudySearch`` per value of ``spec.stratify``, each trial routed to the one that
    suggested it."""

    def __init__(self, spec: SearchSpec) -> None:
        super().__init__(metric=list(spec.objectives), mode=list(spec.objectives.values()))
        if spec.stratify is None:
            raise ValueError("StratifiedSearch needs a spec with sampler.stratify set")
        self._key = spec.stratify
        self._trials = spec.trials
        #: stratum value -> its study; a dict keeps the file's order, which breaks ties
        self.studies = {
            value: StudySearch(spec.stratum(value), counts_trials=False) for value in spec.strata()
        }
        #: trial id -> the stratum value it was suggested in
        self.owner: dict[str, Any] = {}

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        return False  # each study has its define-by-run space already

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if trial_id not in self.owner and all_suggested(self.owner.keys(), self._trials):
            return Searcher.FINISHED
        value = self.owner[trial_id] if trial_id in self.owner else self._next_stratum()
        config = self.studies[value].suggest(trial_id)
        if not isinstance(config, dict):
            return config
        self.owner[trial_id] = value
        return {self._key: value, **config}

    def _next_stratum(self) -> Any:
        counts = dict.fromkeys(self.studies, 0)
        for value in self.owner.values():
            counts[value] += 1
        return min(counts, key=counts.__getitem__)  # min keeps the first of equal counts

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.owner:
            self.studies[self.owner[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self.owner:
            self.studies[self.owner[trial_id]].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as file:
            pickle.dump(self.__dict__.copy(), file)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(pickle.load(file))


def make_searcher(spec: SearchSpec) -> Searcher:
    """The space file's sampler: one study, or one per stratum."""
    return StratifiedSearch(spec) if spec.stratify else StudySearch(spec)
