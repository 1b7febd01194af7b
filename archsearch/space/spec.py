"""What a search varies: the searched parameters and the validated spec they belong to.

Sampling is define-by-run (``SearchSpec.sample`` calls ``trial.suggest_*``), so a gate's
options are sampled only in trials that use that gate and the optimiser never models a
parameter that had no effect. This module knows the suggest methods and the samplers by name
only: Optuna itself stays at the edge, in ``archsearch.search``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from archsearch.config import TrialConfig
from archsearch.constraints import Constraint, describe_constraints
from archsearch.errors import ConfigError
from archsearch.gates import list_gates
from archsearch.pareto import OBJECTIVES
from archsearch.rungs import BIN_DECADES, DEFAULT_RANK


class SpaceError(ConfigError):
    """A search space file that cannot be searched; the message names the file and the key."""


#: a space file's ``sampler.name`` -> the class of ``optuna.samplers`` that implements it
SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "nsga2": "NSGAIISampler",
    "random": "RandomSampler",
}

#: a space file's ``sampler.start``: the sampler's own first trials (independent random
#: draws), or a Latin hypercube laid over the space (``archsearch.space.start``)
STARTS = ("random", "spread")

#: a stratum's sampler seed is ``seed * _STRATUM_SEEDS + its index``: distinct across strata
#: and across the seeds of one space
_STRATUM_SEEDS = 1000

#: a space file's ``scheduler.name``: every trial to its end, or MOASHA's rungs
SCHEDULERS = ("fifo", "moasha")

#: a space file's ``init.from``: what a trial's dense network starts as before gating
INIT_FROM = ("scratch", "reference")


@dataclass(frozen=True)
class SchedulerSpec:
    """The space file's ``scheduler``: ``fifo`` runs every trial to its end; ``moasha`` stops
    trials at rungs of ``grace_epochs * eta**k`` gated epochs (``archsearch.rungs``)."""

    name: str = "fifo"
    grace_epochs: int = 1
    eta: int = 3
    #: the width of a cost bin at a rung, in decades of the hard-mask cost ratio
    bin_decades: float = BIN_DECADES
    #: how a rung orders its results (``archsearch.rungs.RANKS``)
    rank: str = DEFAULT_RANK

    def describe(self) -> dict[str, Any]:
        """Nothing for the default, so searches started before there was a choice resume."""
        if self.name == "fifo":
            return {}
        return {
            "scheduler": self.name,
            "scheduler.grace_epochs": self.grace_epochs,
            "scheduler.eta": self.eta,
            "scheduler.bin_decades": self.bin_decades,
            # only when not the rule of MOASHA searches started before the key existed, so
            # their files resume with rank: cost_bins added
            **({"scheduler.rank": self.rank} if self.rank != "cost_bins" else {}),
        }


#: space parameters that set one TrialConfig field (``<gate>.<option>`` set gate options)
SPACE_FIELDS: dict[str, str] = {
    "gate": "gate",
    "granularity": "granularity",
    "gate_inputs": "gate_inputs",
    "penalty.lambda": "penalty_lambda",
    "penalty.cost": "penalty_cost",
    "penalty.target": "penalty_target",
    "lr": "lr",
    "gate_lr": "gate_lr",
    "lr_schedule": "lr_schedule",
    "weight_decay": "weight_decay",
    "finetune_lr": "finetune_lr",
    "finetune_lr_schedule": "finetune_lr_schedule",
    "distill_weight": "distill_weight",
}

#: granularities that gate neurons, the only ones input gating applies to
INPUT_GATING_GRANULARITIES = ("neuron", "channel+neuron")

#: how each kind of space entry asks the optimiser for a value
_SUGGEST: dict[str, Callable[[Any, str, tuple[Any, ...]], Any]] = {
    "choices": lambda trial, name, v: trial.suggest_categorical(name, list(v)),
    "uniform": lambda trial, name, v: trial.suggest_float(name, v[0], v[1]),
    "loguniform": lambda trial, name, v: trial.suggest_float(name, v[0], v[1], log=True),
    "int": lambda trial, name, v: trial.suggest_int(name, v[0], v[1]),
}

#: the kinds of space entry that are a [lo, hi] range
RANGES = ("uniform", "loguniform", "int")


@dataclass(frozen=True)
class Param:
    """One searched parameter: choices or a range, optionally only sampled when it applies.

    ``kind`` is "choices" or one of ``RANGES``; ``values`` the choices, or (lo, hi); ``when``
    is (parameter, values): sample only when that parameter took one of those values.
    """

    name: str
    kind: str
    values: tuple[Any, ...]
    when: tuple[str, tuple[Any, ...]] | None = None

    def suggest(self, trial: Any) -> Any:
        return _SUGGEST[self.kind](trial, self.name, self.values)

    def applies(self, point: dict[str, Any], base: TrialConfig) -> bool:
        if self.when is None:
            return True
        key, values = self.when
        current = point[key] if key in point else getattr(base, SPACE_FIELDS[key])
        return current in values

    def describe(self) -> str:
        text = list(self.values) if self.kind == "choices" else f"{self.kind}{list(self.values)}"
        if self.when is not None:
            text = f"{text} when {self.when[0]} in {list(self.when[1])}"
        return str(text)


@dataclass(frozen=True)
class SearchSpec:
    """A validated search space file: fixed trial settings, searched parameters, run shape.

    ``base`` holds the fixed settings of every trial; a sampled point replaces some of them.
    """

    name: str
    source: str
    base: TrialConfig
    params: tuple[Param, ...]
    objectives: dict[str, str] = field(default_factory=lambda: dict(OBJECTIVES))
    trials: int = 16
    concurrency: int = 2
    sampler: str = "tpe"
    seed: int = 0
    cpu: float = 1.0
    gpu: float = 0.0
    #: how often a trial cut off by a lost node or worker process runs again from its start
    #: (an exception of the trial's own code is never retried: it is a result)
    retries: int = 2
    #: the pre-flight report (groups, dense FLOPs, layers left out), one line each; not part of
    #: ``describe``, so it never changes what a resumed search must match
    preflight: tuple[str, ...] = ()
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    #: seconds this run of the search may take (``time_budget``, ``--time-budget``); None: no limit
    time_budget: float | None = None
    #: bounds a trial's result must meet to be on the front, also told to the sampler
    constraints: tuple[Constraint, ...] = ()
    #: ``reference.train``: train the dense network once per search (without ``init.weights``)
    reference_train: bool = True
    #: ``init.from``: trials start from scratch (the seed's initialisation) or from the
    #: weights of the dense reference the search trained (what a space file gets unless it
    #: says otherwise, wherever the search trains one: ``schema._reference_settings``)
    init_from: str = "scratch"
    #: ``sampler.stratify``: a searched choice (e.g. ``granularity``) whose every value gets a
    #: sampler of its own and an equal share of the trials (``stratum``); None: one sampler
    stratify: str | None = None
    #: ``strata``: per value of ``stratify``, its own choices or ranges for parameters the space
    #: searches (read over the space's in that stratum's study); () when no stratum has any
    stratum_params: tuple[tuple[Any, tuple[Param, ...]], ...] = ()
    #: ``sampler.start``: how each study's first trials are chosen (``STARTS``)
    start: str = "random"
    #: ``sampler.multivariate``: TPE draws the parameters a trial draws together from one
    #: density (Optuna's ``multivariate=True, group=True``); False: one density per parameter,
    #: Optuna's default
    multivariate: bool = False

    def sample(self, trial: Any) -> dict[str, Any]:
        """Define-by-run space for Optuna: conditions are read from values already drawn."""
        point: dict[str, Any] = {}
        for param in self.params:
            if param.applies(point, self.base):
                point[param.name] = param.suggest(trial)
        return point

    def param(self, name: str | None) -> Param | None:
        """The searched parameter called ``name``; None if the space does not search it."""
        return next((p for p in self.params if p.name == name), None)

    def strata(self) -> tuple[Any, ...]:
        """The values of ``stratify``, in the file's order; () when the search has one sampler."""
        param = self.param(self.stratify)
        return param.values if param is not None else ()

    def stratum(self, value: Any) -> SearchSpec:
        """The search of one stratum: ``stratify`` fixed at ``value`` in the fixed settings (so
        conditions on it still read it), its own seed, every other parameter still searched."""
        index = self.strata().index(value)
        own = {p.name: p for p in dict(self.stratum_params).get(value, ())}
        return dataclasses.replace(
            self,
            base=dataclasses.replace(self.base, **{SPACE_FIELDS[self.stratify]: value}),
            params=tuple(own.get(p.name, p) for p in self.params if p.name != self.stratify),
            seed=self.seed * _STRATUM_SEEDS + index,
            stratify=None,
            stratum_params=(),
        )

    def trial_config(self, sampled: dict[str, Any]) -> TrialConfig:
        """The fixed settings with a sampled point laid over them."""
        fields = {SPACE_FIELDS[k]: v for k, v in sampled.items() if k in SPACE_FIELDS}
        gate = fields.get("gate", self.base.gate)
        options = dict(self.base.gate_options) if gate == self.base.gate else {}
        for key, value in sampled.items():
            owner, _, option = key.partition(".")
            if key not in SPACE_FIELDS and owner == gate:
                options[option] = value
            elif key not in SPACE_FIELDS and owner not in list_gates():
                raise ConfigError(f"sampled parameter {key!r} is not in the space of {self.source}")
        return dataclasses.replace(self.base, **fields, gate_options=options)

    def describe(self) -> dict[str, Any]:
        """Flat settings for the search's parent run, so a run records what was searched."""
        searched = {SPACE_FIELDS.get(p.name) for p in self.params}
        fixed = {k: v for k, v in self.base.to_dict().items() if k not in searched}
        return {
            "space_file": self.source,
            "trials": self.trials,
            "concurrency": self.concurrency,
            "sampler": self.sampler,
            "sampler.seed": self.seed,
            "resources.cpu": self.cpu,
            "resources.gpu": self.gpu,
            "retries": self.retries,
            **{f"fixed.{k}": v for k, v in fixed.items()},
            **{f"space.{p.name}": p.describe() for p in self.params},
            **self.scheduler.describe(),
            **({"time_budget": self.time_budget} if self.time_budget is not None else {}),
            **describe_constraints(self.constraints),
            # only when not the default, so searches started before these keys resume
            **({} if self.reference_train else {"reference.train": False}),
            **({"init.from": self.init_from} if self.init_from != "scratch" else {}),
            **({"sampler.stratify": self.stratify} if self.stratify else {}),
            **{
                f"strata.{value}.{p.name}": p.describe()
                for value, params in self.stratum_params
                for p in params
            },
            **({"sampler.start": self.start} if self.start != "random" else {}),
            **({"sampler.multivariate": True} if self.multivariate else {}),
        }
