"""The hardened subnetwork on disk: ``subnetwork.json`` + ``weights.safetensors``.

The JSON says how to rebuild the architecture (model name and options, kept indices per
group) and what it costs (FLOPs per layer, counting convention); the weights are a plain
safetensors state dict. Together they rebuild the model without unpickling anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from archsearch.errors import ConfigError
from archsearch.models import create_model, with_module_versions
from archsearch.pruning.flops import FlopReport
from archsearch.pruning.harden import HardenedModel, SelectFeatures, apply_structure

FORMAT = "archsearch.subnetwork/1"
PRUNABLE = (nn.Conv2d, nn.Linear)


def describe_subnetwork(
    hardened: HardenedModel,
    *,
    model_name: str,
    model_options: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    flops: FlopReport,
    dense_flops: int,
    dense_widths: dict[str, tuple[int, int]],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything a user or ``export`` needs to know about a hardened subnetwork."""
    layers = _layers(hardened, flops, dense_widths)
    return {
        "format": FORMAT,
        "model": {
            "name": model_name,
            "options": _jsonable(model_options),
            "input_shape": list(input_shape),
            "num_classes": num_classes,
        },
        "architecture": architecture_string(hardened.model),
        "structure": hardened.structure,
        "densities": hardened.densities,
        "degenerate_groups": hardened.degenerate_groups,
        "layers": layers,
        "flops": {
            **flops.to_dict(),
            "dense": dense_flops,
            "ratio": flops.total / dense_flops if dense_flops else 1.0,
        },
        **(extra or {}),
    }


def _layers(
    hardened: HardenedModel, flops: FlopReport, dense_widths: dict[str, tuple[int, int]]
) -> list[dict[str, Any]]:
    wrapped = {f"{e['root']}.1": e["root"] for e in hardened.structure if e["kind"] == "input"}
    rows = []
    for name, module in hardened.model.named_modules():
        if not isinstance(module, PRUNABLE):
            continue
        original = wrapped.get(name, name)
        width_in, width_out = _widths(module)
        dense_in, dense_out = dense_widths.get(original, (width_in, width_out))
        rows.append(
            {
                "name": name,
                "type": type(module).__name__,
                "in": width_in,
                "out": width_out,
                "dense_in": dense_in,
                "dense_out": dense_out,
                "density": hardened.densities.get(original, 1.0),
                "flops": flops.per_layer.get(name, 0),
            }
        )
    return rows


def _widths(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Conv2d):
        return module.in_channels, module.out_channels
    return module.in_features, module.out_features


def architecture_string(model: nn.Module) -> str:
    """Kept widths in execution order, e.g. ``784-212-61-10`` for a hardened LeNet-300-100."""
    layers = [m for m in model.modules() if isinstance(m, PRUNABLE)]
    if not layers:
        return ""
    return "-".join(str(w) for w in [_widths(layers[0])[0]] + [_widths(m)[1] for m in layers])


def dense_widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    return {n: _widths(m) for n, m in model.named_modules() if isinstance(m, PRUNABLE)}


def save_subnetwork(directory: Path, description: dict[str, Any], model: nn.Module) -> None:
    """Write subnetwork.json and weights.safetensors atomically (never half-written)."""
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    _atomic(directory / "weights.safetensors", lambda p: save_file(state, str(p)))
    write_json(directory / "subnetwork.json", description)


def write_json(path: Path, payload: Any) -> None:
    _atomic(path, lambda p: p.write_text(json.dumps(payload, indent=2) + "\n"))


def _atomic(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def rebuild_subnetwork(description: dict[str, Any], weights_path: Path) -> nn.Module:
    """The hardened module from its description and safetensors weights, in eval mode."""
    if description.get("format") != FORMAT:
        raise ConfigError(
            f"not an archsearch subnetwork description (format {description.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    spec = description["model"]
    input_shape = tuple(spec["input_shape"])
    model = create_model(spec["name"], input_shape, spec["num_classes"], **spec["options"])
    apply_structure(model, input_shape, description["structure"])
    state = with_module_versions(model, load_file(str(weights_path)))
    model.load_state_dict(state, strict=True)
    return model.eval()


def load_subnetwork(directory: Path) -> nn.Module:
    description = json.loads((directory / "subnetwork.json").read_text())
    return rebuild_subnetwork(description, directory / "weights.safetensors")


def input_keep_map(model: nn.Module) -> list[int] | None:
    """Input features that survived input gating (the per-feature keep map), if any."""
    for module in model.modules():
        if isinstance(module, SelectFeatures):
            return module.index.tolist()
    return None


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    return value
