"""``archsearch train``: one pruning trial from the command line.

The trial flags are generated from ``TrialConfig``'s fields (name, type, default and help live
on the dataclass), and the lists of models, data sets, gates and granularities in the help are
read from the registries when the help is shown, so neither can drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from archsearch.commands._common import key_values
from archsearch.config import TrialConfig
from archsearch.cost_gap import describe_cost_gap

_DESCRIPTION = (
    "Run one pruning trial (the same function the search runs per trial) and write "
    "DIR/metrics.json, DIR/subnetwork.json, DIR/weights.safetensors and "
    "DIR/history.json. FLOPs are counted by fvcore on the hardened subnetwork for one "
    "input example; one multiply-accumulate counts as one flop."
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train",
        help="run one pruning trial: train gated, harden, fine-tune, evaluate, count FLOPs",
        description=_DESCRIPTION,
        formatter_class=_HelpFormatter,
    )
    for setting in dataclasses.fields(TrialConfig):
        p.add_argument(_flag(setting), **_argument(setting))
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/train"),
        help="folder for metrics.json, subnetwork.json, weights.safetensors",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _flag(setting: dataclasses.Field) -> str:
    return setting.metadata.get("flag") or "--" + setting.name.replace("_", "-")


def _type(setting: dataclasses.Field) -> Any:
    """The field's type with ``| None`` taken off: ``float | None`` parses as a float."""
    hint = _type_hints()[setting.name]
    if typing.get_origin(hint) is dict:
        return dict
    return next((t for t in typing.get_args(hint) if t is not type(None)), hint)


@functools.cache
def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrialConfig)


def _argument(setting: dataclasses.Field) -> dict[str, Any]:
    """add_argument's keywords for one field: options are repeatable KEY=VALUE flags, a bool
    is a switch, anything else takes one value of the field's type."""
    common = {"dest": setting.name, "help": setting.metadata.get("help")}
    kind = _type(setting)
    if kind is dict:
        return {**common, "action": "append", "default": [], "metavar": "KEY=VALUE"}
    if kind is bool:
        return {**common, "action": "store_true"}
    return {**common, "type": kind, "default": setting.default}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, and fills the registries' names into the help only when it is shown,
    so building the parser for another command loads no model, data or gate code."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return text.format_map(_registry_names()) if text and "{" in text else text


@functools.cache
def _registry_names() -> dict[str, str]:
    from archsearch.data import list_datasets
    from archsearch.gates import get_gate_info, list_gates
    from archsearch.models import list_models
    from archsearch.pruning.cost import COSTS
    from archsearch.pruning.groups import GRANULARITIES

    warmup = [name for name in list_gates() if get_gate_info(name).cls.requires_warmup]
    return {
        "models": ", ".join(list_models()),
        "datasets": ", ".join(list_datasets()),
        "gates": ", ".join(list_gates()),
        "warmup_gates": " and ".join(warmup) or "no gate",
        "granularities": _either(GRANULARITIES),
        "costs": _either(COSTS),
    }


def _either(names: Sequence[str]) -> str:
    """``a, b or c``: how the help names alternatives."""
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def _config(args: argparse.Namespace) -> TrialConfig:
    """The TrialConfig the flags describe; KEY=VALUE options are read as YAML values."""
    values = {}
    for setting in dataclasses.fields(TrialConfig):
        value = getattr(args, setting.name)
        values[setting.name] = (
            key_values(value, _flag(setting)) if _type(setting) is dict else value
        )
    return TrialConfig(**values)


def run(args: argparse.Namespace) -> int:
    from archsearch.models import get_model_info
    from archsearch.progress import EpochProgress
    from archsearch.trial import check_teacher, load_data, run_trial

    config = _config(args)
    get_model_info(config.model)  # an unknown model is one line, before the bar starts
    check_teacher(config)
    data = load_data(config)
    total = config.resolved_pretrain_epochs + config.epochs + config.finetune_epochs
    with EpochProgress(total, enabled=not args.quiet) as progress:
        result = run_trial(config, out_dir=args.out, on_epoch=progress.update, data=data)
    print(f"data           {data.describe()}")
    print(format_result(result.metrics, result.subnetwork, args.out))
    return 0


def format_result(metrics: dict[str, Any], subnetwork: dict[str, Any], out: Path) -> str:
    """The end-of-trial summary a user reads: accuracy, FLOPs, the kept architecture."""
    from archsearch.latency import describe_latency  # torch: imported once a trial ran

    flops = subnetwork["flops"]
    shape = "x".join(str(d) for d in flops["input_shape"])
    val, test = metrics["val_accuracy"], metrics["test_accuracy"]
    lines = [
        f"val accuracy   {val:.4f}   test accuracy {test:.4f}",
        f"FLOPs          {metrics['flops']:,} = {100 * metrics['flops_ratio']:.2f}% of "
        f"{metrics['dense_flops']:,} dense  (fvcore, one multiply-accumulate = one flop, "
        f"one {shape} input)",
        f"params         {metrics['params']:,} = {100 * metrics['params_ratio']:.2f}% of "
        f"{metrics['dense_params']:,} dense",
        f"kept           {subnetwork['architecture']}",
    ]
    if subnetwork["densities"]:
        kept = ", ".join(f"{k} {100 * v:.1f}%" for k, v in subnetwork["densities"].items())
        lines.append(f"weight density {kept}")
    if subnetwork["degenerate_groups"]:
        lines.append(
            f"degenerate     gates dropped every group of: "
            f"{', '.join(subnetwork['degenerate_groups'])} (kept the strongest one)"
        )
    if metrics.get("cost_gap_large"):
        lines.append(
            "cost gap       "
            + describe_cost_gap(metrics["expected_cost_ratio"], metrics["hard_cost_ratio"])
            + " at the end of gated training"
        )
    latency = describe_latency(metrics)
    if latency is not None:
        lines.append(f"latency        {latency}")
    lines.append(f"train seconds  {metrics['train_seconds']:.1f}")
    lines.append(f"wrote          {out}/metrics.json, subnetwork.json, weights.safetensors")
    return "\n".join(lines)
