"""Export a hardened subnetwork to a deployment format, and prove the file computes the same.

The source is what a trial wrote (``subnetwork.json`` + ``weights.safetensors``), in a local
folder or as the artifacts of an MLflow run. The module is rebuilt from those two files only
(nothing is unpickled), written into a staging folder beside the output, loaded back in the
format's own runtime and compared with the rebuilt module on random batches; only a file that
passes is moved into place, so a failed export leaves nothing behind.

Each format is one registry entry (writer, loader, extra files). ONNX uses the TorchScript
exporter (``dynamo=False``): the same operators as the torch.export one on these graphs, in a
tenth of the time, in smaller files; verification catches a divergence from either. A format
that cannot express a layer is refused in one line naming the formats verified to work.
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from archsearch.errors import ArchSearchError, ConfigError, first_line
from archsearch.latency import weight_density
from archsearch.models import primary_output
from archsearch.onnx_graph import EXAMPLE_BATCH, write_onnx
from archsearch.pruning.flops import count_flops, count_nonzero_params, count_params
from archsearch.subnetwork import rebuild_subnetwork


class ExportError(ArchSearchError):
    """A source, format or output that cannot be exported, or an export that does not verify."""


DESCRIPTION = "subnetwork.json"
WEIGHTS = "weights.safetensors"
#: largest allowed difference between the written file's outputs and the rebuilt module's
TOLERANCE = 1e-4
#: the batches the written file is checked on: neither is the traced one, so a batch size
#: baked into the graph fails verification
VERIFY_BATCHES = (1, 3)

Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ExportReport:
    """What was written and the evidence that it is the trial's subnetwork."""

    path: Path
    format: str
    bytes: int
    #: fvcore, one multiply-accumulate = one flop, one example of ``input_shape``
    flops: int
    dense_flops: int
    params: int
    input_shape: tuple[int, ...]
    max_abs_diff: float
    #: what loaded the written file for the comparison
    runtime: str
    #: files written beside ``path`` (the description next to a safetensors export)
    companions: tuple[Path, ...] = ()
    #: what the trial measured (``archsearch.latency``), from the description; {} before it
    latency: dict[str, Any] = field(default_factory=dict)
    #: the share of the weights stored as zeros (a weight-granularity subnetwork)
    zero_weight_share: float = 0.0


@dataclass(frozen=True)
class ExportFormat:
    """One registry entry: how to write a module and how to run the written file."""

    summary: str
    runtime: str
    write: Callable[[nn.Module, dict[str, Any], Path], None]
    load: Callable[[Path], Runner]
    companions: Callable[[Path], tuple[Path, ...]] = lambda _path: ()
    #: output file suffixes that name this format when ``--format`` is left out
    suffixes: tuple[str, ...] = ()


# -- the formats ---------------------------------------------------------------------------


def _example(description: dict[str, Any], batch: int, seed: int = 0) -> torch.Tensor:
    shape = tuple(description["model"]["input_shape"])
    return torch.randn((batch, *shape), generator=torch.Generator().manual_seed(seed))


def _write_onnx(module: nn.Module, description: dict[str, Any], path: Path) -> None:
    write_onnx(module, _example(description, EXAMPLE_BATCH), str(path))


def _load_onnx(path: Path) -> Runner:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


@contextmanager
def _no_jit_deprecation() -> Iterator[None]:
    """torch.jit warns that it is deprecated on every call; the user asked for TorchScript."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def _write_torchscript(module: nn.Module, _description: dict[str, Any], path: Path) -> None:
    # scripted, not traced: scripting keeps every branch of forward instead of the one taken
    with _no_jit_deprecation():
        torch.jit.script(module).save(str(path))


def _load_torchscript(path: Path) -> Runner:
    with _no_jit_deprecation():
        return torch.jit.load(str(path), map_location="cpu")


def _write_pt2(module: nn.Module, description: dict[str, Any], path: Path) -> None:
    program = torch.export.export(
        module,
        (_example(description, EXAMPLE_BATCH),),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    # through a buffer: torch.export.save/load complain about (and load() first tries to
    # read as a package) any path not ending in .pt2, and -o is the user's choice
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    path.write_bytes(buffer.getvalue())


def _load_pt2(path: Path) -> Runner:
    return torch.export.load(io.BytesIO(path.read_bytes())).module()


def description_path(weights: Path) -> Path:
    """The description written next to a safetensors export: ``<output>.json``, appended
    rather than replacing the suffix so it can never collide with the weights file."""
    return weights.with_name(f"{weights.name}.json")


def _write_safetensors(module: nn.Module, description: dict[str, Any], path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path))
    description_path(path).write_text(json.dumps(description, indent=2) + "\n")


def _load_safetensors(path: Path) -> Runner:
    description = json.loads(description_path(path).read_text())
    return rebuild_subnetwork(description, path)


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(
        "ONNX graph with a dynamic batch axis (input 'input', output 'logits')",
        "onnxruntime",
        _write_onnx,
        _load_onnx,
        suffixes=(".onnx",),
    ),
    "torchscript": ExportFormat(
        "scripted TorchScript module (torch.jit.load)",
        "torch.jit.load",
        _write_torchscript,
        _load_torchscript,
        suffixes=(".pt", ".torchscript"),  # torch.jit.save's examples write .pt
    ),
    "pt2": ExportFormat(
        "torch.export program with a dynamic batch axis (torch.export.load)",
        "torch.export.load",
        _write_pt2,
        _load_pt2,
        suffixes=(".pt2",),
    ),
    "safetensors": ExportFormat(
        "weights plus <output>.json description (archsearch.subnetwork.rebuild_subnetwork)",
        "safetensors + rebuild_subnetwork",
        _write_safetensors,
        _load_safetensors,
        lambda path: (description_path(path),),
        suffixes=(".safetensors",),
    ),
}


#: every suffix that names a format, with the format: ".onnx (onnx), .pt (torchscript), ..."
SUFFIX_LIST = ", ".join(f"{s} ({name})" for name, fmt in FORMATS.items() for s in fmt.suffixes)


def format_for(output: Path) -> str:
    """The format an output file's suffix names (``model.onnx``: onnx), so ``-o model.onnx``
    needs no ``--format``; a suffix that names none is an error that lists the ones that do."""
    suffix = output.suffix.lower()
    for name, fmt in FORMATS.items():
        if suffix in fmt.suffixes:
            return name
    raise ExportError(
        f"cannot tell the format from the output name {output.name!r}; add --format "
        f"(one of: {', '.join(FORMATS)}) or end it in one of: {SUFFIX_LIST}"
    )


def get_format(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; use one of: {', '.join(FORMATS)}")
    return FORMATS[name]


# -- the export ----------------------------------------------------------------------------


def export_subnetwork(
    source: str, fmt: str, output: Path, *, tracking_uri: str | None = None
) -> ExportReport:
    """Write the subnetwork of ``source`` (a trial folder, else an MLflow run id or a unique
    prefix of one) as ``fmt`` to ``output``, verified against the stored weights."""
    export_format = get_format(fmt)
    output = Path(output)
    if output.is_dir():
        raise ExportError(f"output {output} is a directory; pass a file path to -o")
    with tempfile.TemporaryDirectory(prefix="archsearch-export-") as downloads:
        description_file, weights_file = _locate(source, tracking_uri, Path(downloads))
        description = _read_description(description_file)
        module = _rebuild(description, weights_file, source)
        reference = _rebuild(description, weights_file, source)  # untouched by the exporter
    flops = _checked_flops(description, reference, source)
    diff, size = _write_verified(export_format, fmt, module, reference, description, output)
    params = (
        count_nonzero_params(reference) if description.get("densities") else count_params(reference)
    )
    return ExportReport(
        path=output,
        format=fmt,
        bytes=size,
        flops=flops,
        dense_flops=int(description["flops"].get("dense", flops)),
        params=params,
        input_shape=tuple(description["model"]["input_shape"]),
        max_abs_diff=diff,
        runtime=export_format.runtime,
        companions=export_format.companions(output),
        latency=dict(description.get("latency") or {}),
        zero_weight_share=1.0 - weight_density(reference),
    )


def _locate(source: str, tracking_uri: str | None, downloads: Path) -> tuple[Path, Path]:
    """The two files of ``source``: a folder wins over a run id of the same name."""
    folder = Path(source)
    if folder.is_dir():
        missing = [name for name in (DESCRIPTION, WEIGHTS) if not (folder / name).is_file()]
        if missing:
            raise ExportError(
                f"{folder} has no {' or '.join(missing)}; pass the folder `archsearch train "
                f"--out` wrote, or an MLflow run id"
            )
        return folder / DESCRIPTION, folder / WEIGHTS
    _download_run(source, tracking_uri, downloads)
    return downloads / DESCRIPTION, downloads / WEIGHTS


def _download_run(run_id: str, tracking_uri: str | None, into: Path) -> None:
    """The two files from the root of a run's artifacts, where the search logs them. Tracking
    is imported here, not above: only a run id source needs MLflow."""
    from archsearch.tracking import TrackingError, download_run

    try:
        download_run(run_id, (DESCRIPTION, WEIGHTS), into, tracking_uri)
    except TrackingError as error:
        raise ExportError(str(error)) from None


def _read_description(path: Path) -> dict[str, Any]:
    try:
        description = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot read {path.name} ({error}); re-run the trial") from None
    if not isinstance(description, dict):
        raise ExportError(f"{path.name} is not an archsearch subnetwork description")
    return description


def _rebuild(description: dict[str, Any], weights: Path, source: str) -> nn.Module:
    try:
        return rebuild_subnetwork(description, weights)
    except ConfigError:
        raise
    except Exception as error:  # a mismatched or corrupt pair of files, not a bug here
        raise ExportError(
            f"cannot rebuild the subnetwork of {source} from {DESCRIPTION} + {WEIGHTS} "
            f"({first_line(error)}); the two files must come from the same trial"
        ) from None


def _checked_flops(description: dict[str, Any], module: nn.Module, source: str) -> int:
    """The stored count must be what the rebuilt module costs: otherwise the report (and the
    Pareto front it came from) describes a different network than the file we write."""
    shape = tuple(description["model"]["input_shape"])
    counted = count_flops(module, shape, densities=description.get("densities") or None).total
    stored = int(description["flops"]["total"])
    if counted != stored:
        raise ExportError(
            f"{DESCRIPTION} of {source} says {stored:,} FLOPs but the rebuilt module counts "
            f"{counted:,}; the files do not describe the same network, re-run the trial"
        )
    return counted


def _write_verified(
    export_format: ExportFormat,
    fmt: str,
    module: nn.Module,
    reference: nn.Module,
    description: dict[str, Any],
    output: Path,
) -> tuple[float, int]:
    """Write into a staging folder beside ``output``, verify there, then rename into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.") as stage:
        staged = Path(stage) / output.name
        try:
            export_format.write(module, description, staged)
        except Exception as error:
            raise _refusal(fmt, error, reference, description, Path(stage)) from None
        diff = _verify(export_format, fmt, staged, reference, description)
        for src, dst in zip(
            (staged, *export_format.companions(staged)),
            (output, *export_format.companions(output)),
            strict=True,
        ):
            os.replace(src, dst)
    return diff, output.stat().st_size


def _refusal(
    fmt: str, error: Exception, reference: nn.Module, description: dict[str, Any], stage: Path
) -> ExportError:
    """One line: why ``fmt`` cannot express this subnetwork (ONNX has no adaptive pooling to
    a size that does not divide its input) and which formats can, each written and verified
    in the staging folder on a copy of the module (exporters may change what they are given)."""
    working = []
    for name in (f for f in FORMATS if f != fmt):
        try:
            FORMATS[name].write(copy.deepcopy(reference), description, stage / f"probe.{name}")
            _verify(FORMATS[name], name, stage / f"probe.{name}", reference, description)
            working.append(name)
        except Exception:  # this format cannot either: left out of the advice
            continue
    shape = "x".join(str(d) for d in description["model"]["input_shape"])
    cause = first_line(error).split(". ")[0].split(" [Caused by")[0].strip()[:160]
    advice = f"formats verified to work here: {', '.join(working or ['none'])}"
    return ExportError(f"cannot write this subnetwork as {fmt} at {shape} ({cause}); {advice}")


def _verify(
    export_format: ExportFormat,
    fmt: str,
    path: Path,
    reference: nn.Module,
    description: dict[str, Any],
) -> float:
    """Largest |difference| between the written file, run in its own runtime, and the module
    rebuilt from the stored weights, over batches the graph was not traced with."""
    try:
        run = export_format.load(path)
    except Exception as error:
        raise ExportError(
            f"the written {fmt} file does not load in {export_format.runtime} "
            f"({first_line(error)}); nothing was written"
        ) from None
    worst = 0.0
    for seed, batch in enumerate(VERIFY_BATCHES, start=1):
        x = _example(description, batch, seed)
        with torch.no_grad():
            expected, got = primary_output(reference(x)), primary_output(run(x))
        if tuple(got.shape) != tuple(expected.shape):
            raise ExportError(
                f"the written {fmt} file returns shape {tuple(got.shape)} for a batch of "
                f"{batch}, the subnetwork {tuple(expected.shape)}; nothing was written"
            )
        diff = float((got.float() - expected.float()).abs().max())
        if not diff <= TOLERANCE:  # also catches NaN
            raise ExportError(
                f"the written {fmt} file differs from the rebuilt subnetwork by {diff:.3g} "
                f"(tolerance {TOLERANCE:g}) on a batch of {batch}; nothing was written"
            )
        worst = max(worst, diff)
    return worst
