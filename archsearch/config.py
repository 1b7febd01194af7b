"""The configuration of one trial, validated once when it is built.

A ``TrialConfig`` is everything ``run_trial`` needs; the CLI builds one from flags and the
search builds one per sampled point. A bad value raises ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from archsearch.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrialConfig:
    """One pruning trial: model, data, gate method, granularity, penalty and schedule."""

    model: str = "lenet_300_100"
    model_options: dict[str, Any] = field(default_factory=dict)
    data: str = "fashion_mnist"
    data_root: str | None = None
    data_options: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.1
    gate: str = "hard_concrete"
    gate_options: dict[str, Any] = field(default_factory=dict)
    granularity: str = "weight"
    gate_inputs: bool = False
    penalty_lambda: float = 0.1
    penalty_cost: str = "flops"
    penalty_target: float | None = None
    epochs: int = 10
    finetune_epochs: int = 2
    #: None: one warm-up epoch for gates that need trained weights, none otherwise
    pretrain_epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    gate_lr: float = 1e-2
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        # imported here so that the CLI can read the defaults without loading torch
        from archsearch.gates import get_gate_info
        from archsearch.pruning.cost import COSTS
        from archsearch.pruning.groups import check_granularity

        get_gate_info(self.gate)
        check_granularity(self.granularity)
        _require(self.penalty_lambda >= 0, "penalty_lambda", self.penalty_lambda, "a number >= 0")
        _require(self.penalty_cost in COSTS, "penalty_cost", self.penalty_cost, " or ".join(COSTS))
        if self.penalty_target is not None:
            _require(
                0 <= self.penalty_target <= 1,
                "penalty_target",
                self.penalty_target,
                "a cost ratio between 0 and 1",
            )
        for key in ("epochs", "batch_size"):
            _require(getattr(self, key) >= 1, key, getattr(self, key), "an integer >= 1")
        _require(
            self.finetune_epochs >= 0, "finetune_epochs", self.finetune_epochs, "an integer >= 0"
        )
        if self.pretrain_epochs is not None:
            _require(
                self.pretrain_epochs >= 0,
                "pretrain_epochs",
                self.pretrain_epochs,
                "an integer >= 0",
            )
        for key in ("lr", "gate_lr"):
            _require(getattr(self, key) > 0, key, getattr(self, key), "a number > 0")
        _require(
            0 < self.val_fraction <= 0.5,
            "val_fraction",
            self.val_fraction,
            "a fraction in (0, 0.5]",
        )
        _require(self.device in DEVICES, "device", self.device, " or ".join(DEVICES))

    @property
    def resolved_pretrain_epochs(self) -> int:
        from archsearch.gates import get_gate_info

        if self.pretrain_epochs is not None:
            return self.pretrain_epochs
        return 1 if get_gate_info(self.gate).cls.requires_warmup else 0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Build from a plain mapping, rejecting unknown keys by name."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown trial setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _require(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is invalid: expected {expected}")


def default_values() -> dict[str, Any]:
    """TrialConfig's scalar defaults, read without building one (validation imports torch)."""
    return {
        f.name: f.default
        for f in dataclasses.fields(TrialConfig)
        if f.default is not dataclasses.MISSING
    }
