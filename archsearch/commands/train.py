"""``archsearch train``: one pruning trial from the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from archsearch.commands._common import key_values


def add_parser(commands: argparse._SubParsersAction) -> None:
    from archsearch.config import default_values

    d = SimpleNamespace(**default_values())
    p = commands.add_parser(
        "train",
        help="run one pruning trial: train gated, harden, fine-tune, evaluate, count FLOPs",
        description=(
            "Run one pruning trial (the same function the search runs per trial) and write "
            "DIR/metrics.json, DIR/subnetwork.json, DIR/weights.safetensors and "
            "DIR/history.json. FLOPs are counted by fvcore on the hardened subnetwork for one "
            "input example; one multiply-accumulate counts as one flop."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--model",
        default=d.model,
        help="model name (mlp, lenet_300_100, "
        "lenet5_caffe, resnet20, resnet56, torchvision/<name>)",
    )
    p.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model option, e.g. hidden=[64,32]; repeatable",
    )
    p.add_argument(
        "--data", default=d.data, help="data set (fashion_mnist, mnist, cifar10, digits, synthetic)"
    )
    p.add_argument("--data-root", default=None, help="folder holding the data set's files")
    p.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="data set option, e.g. download=true (torchvision download, needs internet)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="share of the training set held out for validation",
    )
    p.add_argument("--gate", default=d.gate, help="gate method (see `archsearch gates`)")
    p.add_argument(
        "--gate-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gate option, e.g. tau_min=0.2; repeatable",
    )
    p.add_argument(
        "--granularity", default=d.granularity, help="weight, neuron, channel or channel+neuron"
    )
    p.add_argument(
        "--gate-inputs",
        action="store_true",
        help="also gate the input features (neuron granularity on an MLP)",
    )
    p.add_argument(
        "--lambda",
        dest="penalty_lambda",
        type=float,
        default=d.penalty_lambda,
        help="penalty weight; the penalty is expected cost / dense cost, in [0, 1]",
    )
    p.add_argument(
        "--cost",
        dest="penalty_cost",
        default=d.penalty_cost,
        help="what the penalty counts: flops or params",
    )
    p.add_argument(
        "--target",
        dest="penalty_target",
        type=float,
        default=None,
        help="cost ratio to aim at: penalty becomes lambda * (ratio - target)^2",
    )
    p.add_argument("--epochs", type=int, default=d.epochs, help="gated training epochs")
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=d.finetune_epochs,
        help="epochs of training the hardened subnetwork",
    )
    p.add_argument(
        "--pretrain-epochs",
        type=int,
        default=None,
        help="dense warm-up epochs before gating (default: 1 for learned_threshold, else 0)",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate of the weights")
    p.add_argument(
        "--gate-lr", type=float, default=d.gate_lr, help="Adam learning rate of the gate parameters"
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto (CUDA when visible), cpu or cuda")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs/train"),
        help="folder for metrics.json, subnetwork.json, weights.safetensors",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from archsearch.config import TrialConfig
    from archsearch.progress import EpochProgress
    from archsearch.trial import load_data, run_trial

    config = TrialConfig(
        model=args.model,
        model_options=key_values(args.model_option, "--model-option"),
        data=args.data,
        data_root=args.data_root,
        data_options=key_values(args.data_option, "--data-option"),
        val_fraction=args.val_fraction,
        gate=args.gate,
        gate_options=key_values(args.gate_option, "--gate-option"),
        granularity=args.granularity,
        gate_inputs=args.gate_inputs,
        penalty_lambda=args.penalty_lambda,
        penalty_cost=args.penalty_cost,
        penalty_target=args.penalty_target,
        epochs=args.epochs,
        finetune_epochs=args.finetune_epochs,
        pretrain_epochs=args.pretrain_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        gate_lr=args.gate_lr,
        seed=args.seed,
        device=args.device,
    )
    data = load_data(config)
    total = config.resolved_pretrain_epochs + config.epochs + config.finetune_epochs
    with EpochProgress(total, enabled=not args.quiet) as progress:
        result = run_trial(config, out_dir=args.out, on_epoch=progress.update, data=data)
    print(f"data           {data.describe()}")
    print(format_result(result.metrics, result.subnetwork, args.out))
    return 0


def format_result(metrics: dict[str, Any], subnetwork: dict[str, Any], out: Path) -> str:
    """The end-of-trial summary a user reads: accuracy, FLOPs, the kept architecture."""
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
    lines.append(f"train seconds  {metrics['train_seconds']:.1f}")
    lines.append(f"wrote          {out}/metrics.json, subnetwork.json, weights.safetensors")
    return "\n".join(lines)
