"""``archsearch export``: one trial's subnetwork as a deployable file, verified."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsearch.commands._common import add_budget, add_tracking_uri, budget_of, no_fit_error
from archsearch.errors import ConfigError

if TYPE_CHECKING:
    from archsearch.export import ExportReport
    from archsearch.pareto import Budget


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
            "module and checked against the trial's. With --max-flops-ratio and/or "
            "--min-accuracy, SOURCE is an experiment and the model written is the best "
            "(highest validation accuracy) member of its latest search's front that fits: "
            "the first row of `archsearch pareto NAME` with the same flags; nothing fits: "
            "one line, exit code 2, nothing written. Formats: {formats}."
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="a trial folder (what `archsearch train --out` writes), an MLflow run id or "
        "a unique prefix of it (6+ characters: the 8 that `archsearch pareto` prints do), or, "
        "with a budget flag, an experiment name",
    )
    p.add_argument(
        "--format",
        dest="fmt",
        metavar="FORMAT",
        help="one of: {format_names}; left out, the output's suffix says ({suffixes})",
    )
    p.add_argument("-o", "--output", type=Path, required=True, help="file to write")
    add_budget(p, "export the best front member with")
    add_tracking_uri(p, "MLflow store of a run id or experiment SOURCE")
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
    from archsearch.export import FORMATS, SUFFIX_LIST, TOLERANCE

    return {
        "tolerance": f"{TOLERANCE:g}",
        "formats": "; ".join(f"{name}: {fmt.summary}" for name, fmt in FORMATS.items()),
        "format_names": ", ".join(FORMATS),
        "suffixes": SUFFIX_LIST,
    }


def run(args: argparse.Namespace) -> int:
    from archsearch.export import export_subnetwork, format_for, get_format

    source, budget = args.source, budget_of(args)
    fmt = args.fmt or format_for(args.output)
    get_format(fmt)  # a bad format is reported before the store is read
    if budget:
        source = _best_within(args.source, budget, args.tracking_uri)
    report = export_subnetwork(source, fmt, args.output, tracking_uri=args.tracking_uri)
    print(format_report(report, accuracy=_accuracy_line(source, args.tracking_uri)))
    return 0


def _accuracy_line(source: str, tracking_uri: str | None) -> str | None:
    """What the trial measured (its ``metrics.json``, or its run's metrics) beside the dense
    reference of its search; None when neither can be read (the file is written already)."""
    from archsearch.errors import ArchSearchError

    folder = Path(source)
    reference = None
    try:
        if folder.is_dir():
            metrics = json.loads((folder / "metrics.json").read_text())
        else:
            from archsearch.tracking.rows import trial_with_reference

            metrics, reference = trial_with_reference(source, tracking_uri)
    except (ArchSearchError, OSError, ValueError):
        return None
    return format_accuracy(metrics, reference)


def format_accuracy(metrics: dict[str, Any], reference: dict[str, Any] | None) -> str | None:
    """``test 0.8712, val 0.8790 (measured in the trial): 2.14 points below the test 0.8926
    of the dense reference (trained here)``: test, as in the front's drop column."""
    test, val = metrics.get("test_accuracy"), metrics.get("val_accuracy")
    if test is None and val is None:
        return None
    line = f"test {_share(test, 1, '.4f')}, val {_share(val, 1, '.4f')} (measured in the trial)"
    dense = (reference or {}).get("test_accuracy")
    if dense is not None and test is not None:
        origin = "trained here" if reference.get("source") == "trained" else "loaded weights"
        points = 100 * (dense - test)
        line += (
            f": {abs(points):.2f} points {'below' if points >= 0 else 'above'} the test "
            f"{dense:.4f} of the dense reference ({origin})"
        )
    return line


def _best_within(experiment: str, budget: Budget, tracking_uri: str | None) -> str:
    """The run id of the best front member of ``experiment``'s latest search that fits, with
    one line saying which it is and what it was chosen from."""
    from archsearch.pareto import within_budget
    from archsearch.tracking import front_rows

    if Path(experiment).is_dir():
        raise ConfigError(
            f"{experiment} is a folder, but --max-flops-ratio/--min-accuracy choose a model "
            f"from a search: pass the experiment name, or drop those flags to export the folder"
        )
    front = front_rows(experiment, tracking_uri)
    fitting = within_budget(front, budget)
    if not fitting:
        raise ConfigError(no_fit_error(experiment, budget, front))
    best = fitting[0]
    print(
        f"chose          run {best['run_id']} ({best.get('gate')}/{best.get('granularity')}): "
        f"val accuracy {_share(best['val_accuracy'], 1, '.4f')}, FLOPs "
        f"{_share(best['flops_ratio'], 100, '.2f')}% of dense{_latency_share(best)}; "
        f"the best of {len(fitting)} of {len(front)} front members that fit {budget.describe()}"
    )
    return best["run_id"]


def _latency_share(row: dict[str, Any]) -> str:
    ratio = row.get("latency_ratio")
    return "" if ratio is None else f", latency {100 * ratio:.1f}% of dense"


def format_report(report: ExportReport, accuracy: str | None = None) -> str:
    """What a user needs before shipping the file: where, how big, what it costs, how
    accurate it is (``format_accuracy``), and that it computes what the trial measured."""
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
        *_latency_lines(report),
        *([f"accuracy       {accuracy}"] if accuracy else []),
        f"verified       {report.runtime} matches the rebuilt subnetwork: max |diff| "
        f"{report.max_abs_diff:.2e} <= {TOLERANCE:g} on random batches of "
        f"{' and '.join(str(b) for b in VERIFY_BATCHES)}",
    ]
    return "\n".join(lines)


def _latency_lines(report: ExportReport) -> list[str]:
    """What the trial measured, beside the FLOPs; and which kernels a weight-sparse file gets."""
    from archsearch.latency import describe_latency

    measured = report.latency
    line = describe_latency(measured)
    lines = [] if line is None else [f"latency        {line}, measured in the trial"]
    if report.zero_weight_share >= 0.05:
        sparse = measured.get("sparse_latency_ratio")
        lines.append(
            f"kernels        dense: {100 * report.zero_weight_share:.1f}% of the weights are "
            "zeros, stored and computed"
            + (
                f"; torch's sparse CSR kernels ran at {100 * sparse:.1f}% of dense in the trial"
                if sparse is not None
                else ""
            )
        )
    return lines


def _share(value: float | None, scale: float, spec: str) -> str:
    return "-" if value is None else format(scale * value, spec)


def _size(count: int) -> str:
    mib = count / 2**20
    return f"{count:,} bytes" + (f" = {mib:.1f} MiB" if mib >= 1 else "")
