"""The configuration of one trial, validated once when it is built.

A ``TrialConfig`` is everything ``run_trial`` and the training loops need; ``archsearch train``
generates its flags from the fields (their metadata holds each flag's help) and the search
builds one per sampled point. A bad value raises ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from archsearch.errors import ConfigError
from archsearch.schedules import SCHEDULES

DEVICES = ("auto", "cpu", "cuda")
#: the training arithmetic ``precision`` may name
PRECISIONS = ("fp32", "bf16")

#: how a trial times its pruned network against the dense one (``archsearch.latency``)
LATENCY_RUNTIMES = ("onnxruntime", "torch", "off")


def _setting(help_text: str, *, flag: str | None = None) -> dict[str, Any]:
    """A field's metadata for its command-line flag (``--<field-name>`` unless ``flag``
    says otherwise). ``{models}``, ``{datasets}``, ``{gates}``, ``{warmup_gates}``,
    ``{granularities}`` and ``{costs}`` in the help are filled in from the registries."""
    return {"help": help_text, "flag": flag}


@dataclass(frozen=True)
class TrialConfig:
    """One pruning trial: model, data, gate method, granularity, penalty and schedule.

    Each field carries the help of its ``archsearch train`` flag, so a setting is spelled once.
    """

    model: str = field(
        default="lenet_300_100",
        metadata=_setting(
            "model: {models}; or your own builder as an import path 'package.module:function' "
            "(called with input_shape, num_classes and the model options; importable from the "
            "working folder or PYTHONPATH)"
        ),
    )
    model_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_setting("model option, e.g. hidden=[64,32]; repeatable", flag="--model-option"),
    )
    init_weights: str | None = field(
        default=None,
        metadata=_setting(
            "trained dense weights to start from: a .safetensors file or a .pt/.pth state dict "
            "(read with weights_only=True), loaded before gating"
        ),
    )
    data: str = field(default="fashion_mnist", metadata=_setting("data set: {datasets}"))
    data_root: str | None = field(
        default=None, metadata=_setting("folder holding the data set's files")
    )
    data_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_setting(
            "data set option, e.g. download=true (torchvision download, needs internet)",
            flag="--data-option",
        ),
    )
    val_fraction: float = field(
        default=0.1, metadata=_setting("share of the training set held out for validation")
    )
    gate: str = field(
        default="hard_concrete",
        metadata=_setting("gate method: {gates} (see `archsearch gates`)"),
    )
    gate_options: dict[str, Any] = field(
        default_factory=dict,
        metadata=_setting("gate option, e.g. tau_min=0.2; repeatable", flag="--gate-option"),
    )
    granularity: str = field(
        default="weight", metadata=_setting("what one gate switches: {granularities}")
    )
    gate_inputs: bool = field(
        default=False,
        metadata=_setting("also gate the input features (neuron granularity on an MLP)"),
    )
    penalty_lambda: float = field(
        default=0.1,
        metadata=_setting(
            "penalty weight; the penalty is expected cost / dense cost, in [0, 1]", flag="--lambda"
        ),
    )
    penalty_cost: str = field(
        default="flops", metadata=_setting("what the penalty counts: {costs}", flag="--cost")
    )
    penalty_target: float | None = field(
        default=None,
        metadata=_setting(
            "cost ratio to aim at: penalty becomes lambda * (ratio - target)^2", flag="--target"
        ),
    )
    epochs: int = field(default=10, metadata=_setting("gated training epochs"))
    finetune_epochs: int = field(
        default=2, metadata=_setting("epochs of training the hardened subnetwork")
    )
    #: None: one warm-up epoch for gates that need trained weights, none otherwise
    pretrain_epochs: int | None = field(
        default=None,
        metadata=_setting(
            "dense warm-up epochs before gating (default: 1 for {warmup_gates}, else 0)"
        ),
    )
    batch_size: int = field(default=128, metadata=_setting("minibatch size"))
    lr: float = field(default=1e-3, metadata=_setting("Adam learning rate of the weights"))
    lr_schedule: str = field(
        default="constant",
        metadata=_setting(
            "schedule of the weights' rate within each phase: constant, cosine or step "
            "(x0.1 at 50%% and 75%% of the phase)"
        ),
    )
    lr_warmup_epochs: int = field(
        default=0, metadata=_setting("epochs of linear rate warm-up at the start of each phase")
    )
    weight_decay: float = field(
        default=0.0, metadata=_setting("decoupled weight decay of the weights (AdamW), not gates")
    )
    finetune_lr: float | None = field(
        default=None, metadata=_setting("learning rate of the fine-tuning phase (default: lr)")
    )
    finetune_lr_schedule: str | None = field(
        default=None,
        metadata=_setting(
            "schedule of the fine-tuning phase's rate: constant, cosine or step "
            "(default: lr_schedule)"
        ),
    )
    distill_weight: float = field(
        default=0.0,
        metadata=_setting(
            "share of the fine-tuning loss that distils the dense network the trial started "
            "from (0: plain cross-entropy; needs trained dense weights)"
        ),
    )
    distill_temperature: float = field(
        default=4.0, metadata=_setting("softmax temperature of that distillation")
    )
    gate_lr: float = field(
        default=1e-2, metadata=_setting("Adam learning rate of the gate parameters")
    )
    seed: int = field(
        default=0, metadata=_setting("seed of the initialisation, data split and shuffling")
    )
    device: str = field(default="auto", metadata=_setting("auto (CUDA when visible), cpu or cuda"))
    precision: str = field(
        default="fp32",
        metadata=_setting(
            "arithmetic of the training steps: fp32, or bf16 (autocast: matrix products in "
            "bfloat16, losses and gates in float32; evaluation stays fp32)"
        ),
    )
    latency_runtime: str = field(
        default="onnxruntime",
        metadata=_setting(
            "how the pruned network's latency is measured against the dense one after training: "
            "onnxruntime (CPU, as exported), torch (eager, on the trial's device) or off"
        ),
    )
    latency_batch: int = field(
        default=64, metadata=_setting("batch size of the second latency measurement (and 1)")
    )
    latency_repeats: int = field(
        default=7, metadata=_setting("interleaved rounds of the latency measurement (median)")
    )
    latency_threads: int = field(
        default=1, metadata=_setting("threads of the runtime while latency is measured")
    )

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
                0 < self.penalty_target <= 1,
                "penalty_target",
                self.penalty_target,
                "a cost ratio above 0 and at most 1",
            )
        self._check_numbers()
        choices = {
            "device": DEVICES,
            "precision": PRECISIONS,
            "latency_runtime": LATENCY_RUNTIMES,
            "lr_schedule": tuple(SCHEDULES),
        }
        if self.finetune_lr_schedule is not None:
            choices["finetune_lr_schedule"] = tuple(SCHEDULES)
        for key, allowed in choices.items():
            value = getattr(self, key)
            _require(value in allowed, key, value, " or ".join(allowed))
        _require(
            0 < self.val_fraction <= 0.5,
            "val_fraction",
            self.val_fraction,
            "a fraction in (0, 0.5]",
        )
        if self.init_weights is not None:
            _require(
                isinstance(self.init_weights, str) and bool(self.init_weights),
                "init_weights",
                self.init_weights,
                "the path of a weights file",
            )

    def _check_numbers(self) -> None:
        """Counts at least their minimum, rates above 0, decay at least 0 (None: default)."""
        minimum = {
            "epochs": 1,
            "batch_size": 1,
            "finetune_epochs": 0,
            "pretrain_epochs": 0,
            "lr_warmup_epochs": 0,
            "latency_batch": 1,
            "latency_repeats": 1,
            "latency_threads": 1,
        }
        for key, least in minimum.items():
            value = getattr(self, key)
            if value is not None:
                _require(value >= least, key, value, f"an integer >= {least}")
        for key in ("lr", "gate_lr", "finetune_lr"):
            value = getattr(self, key)
            if value is not None:
                _require(value > 0, key, value, "a number > 0")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        share = self.distill_weight
        _require(0 <= share <= 1, "distill_weight", share, "a share in [0, 1]")
        _require(
            self.distill_temperature > 0,
            "distill_temperature",
            self.distill_temperature,
            "a number > 0",
        )

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
