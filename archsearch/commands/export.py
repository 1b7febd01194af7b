"""``archsearch export``: one trial's subnetwork as a deployable file, verified."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from archsearch.commands._common import add_tracking_uri

if TYPE_CHECKING:
    from archsearch.export import ExportReport


def add_parser(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="write a trial's subnetwork as ONNX, TorchScript, torch.export or safetensors",
        description=(
            "Rebuild the hardened subnetwork of a trial from subnetwork.json + "
            "weights.safetensors (never unpickling), write it in FORMAT, load the written file "
            "back in that format's runtime and compare its outputs with the rebuilt module "
            "(max |diff| <= {tolerance}, else nothing is written). FLOPs are fvcore's for "
            "one input example (one multiply-accumulate = one flop), recounted on the rebuilt "
            "module and checked against the trial's. Formats: {formats}."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a trial folder (what `archsearch train --out` writes) or an MLflow run id",
    )
    p.add_argument(
        "--format",
        dest="fmt",
        required=True,
        metavar="FORMAT",
        help="one of: {format_names}",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    add_tracking_uri(p, "MLflow store of a run id SOURCE")
    p.set_defaults(run=run)


class _HelpFormatter(argparse.HelpFormatter):
    """Fills the formats and the tolerance into the help only when it is shown, so building
    the parser for another command (or ``archsearch --help``) imports no torch."""

    def _format_text(self, text: str) -> str:
        return super()._format_text(text.format_map(_help_names()) if "{" in text else text)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return text.format_map(_help_names()) if text and "{" in text else text


def _help_names() -> dict[str, str]:
    from archsearch.export import FORMATS, TOLERANCE

    return {
        "tolerance": f"{TOLERANCE:g}",
        "formats": "; ".join(f"{name}: {fmt.summary}" for name, fmt in FORMATS.items()),
        "format_names": ", ".join(FORMATS),
    }


def run(args: argparse.Namespace) -> int:
    from archsearch.export import export_subnetwork

    report = export_subnetwork(args.source, args.fmt, args.output, tracking_uri=args.tracking_uri)
    print(format_report(report))
    return 0


def format_report(report: ExportReport) -> str:
    """What a user needs before shipping the file: where, how big, what it costs, and that
    it computes what the trial measured."""
    from archsearch.export import TOLERANCE, VERIFY_BATCHES

    shape = "x".join(str(d) for d in report.input_shape)
    ratio = f" = {100 * report.flops / report.dense_flops:.2f}% of {report.dense_flops:,} dense"
    lines = [
        f"wrote          {report.path}  ({report.format}, {_size(report.bytes)})",
        *(
            f"also wrote     {path}  (the description it rebuilds from)"
            for path in report.companions
        ),
        f"FLOPs          {report.flops:,}{ratio if report.dense_flops else ''}  (fvcore, one "
        f"multiply-accumulate = one flop, one {shape} input)",
        f"params         {report.params:,}",
        f"verified       {report.runtime} matches the rebuilt subnetwork: max |diff| "
        f"{report.max_abs_diff:.2e} <= {TOLERANCE:g} on random batches of "
        f"{' and '.join(str(b) for b in VERIFY_BATCHES)}",
    ]
    return "\n".join(lines)


def _size(count: int) -> str:
    mib = count / 2**20
    return f"{count:,} bytes" + (f" = {mib:.1f} MiB" if mib >= 1 else "")
