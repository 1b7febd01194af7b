"""A network of the user's own, pruned as a user would: a model defined in a module outside
the package (``usernet.py`` in the folder the search runs in), an ImageFolder of PNGs, and
dense weights trained beforehand, through the Python API; plus the pieces it rests on (the
dense reference on the parent run and under the table, the module carried to Ray workers,
callables turned into import paths).

The helpers here (``write_user_project``) are shared with the two-node cluster test.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
import torch
from conftest import run_cli_subprocess

from archsearch import api
from archsearch.errors import ConfigError
from archsearch.pareto import format_reference
from archsearch.search.cluster import user_runtime_env

IMAGE_SIZE = 16

#: the user's model: what a user writes, in a module of their own
USER_MODULE = """\
from torch import nn


def build_net(input_shape, num_classes, width=8):
    return nn.Sequential(
        nn.Conv2d(input_shape[0], width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 4, num_classes),
    )
"""


@dataclasses.dataclass
class UserProject:
    """What a user has before a search: their module, their images, their trained weights."""

    folder: Path
    images: Path
    weights: Path
    mean: list[float]
    std: list[float]

    def space(self, name: str, **sections: object) -> dict[str, object]:
        """A space file's mapping for a search of ``usernet:build_net`` on the images."""
        return {
            "name": name,
            "model": {"name": "usernet:build_net"},
            "data": {
                "name": "imagefolder",
                "root": str(self.images),
                "options": {"image_size": IMAGE_SIZE, "mean": self.mean, "std": self.std},
            },
            "init": {"weights": str(self.weights)},
            "trials": 2,
            "concurrency": 2,
            "sampler": {"name": "random", "seed": 0},
            "train": {"epochs": 1, "finetune_epochs": 1, "pretrain_epochs": 0, "batch_size": 64},
            "space": {
                "gate": ["hard_concrete"],
                "granularity": ["channel"],
                "penalty.lambda": {"loguniform": [0.1, 1.0]},
            },
            **sections,
        }


def write_user_project(folder: Path, dense_epochs: int = 6) -> UserProject:
    """``usernet.py``, an ImageFolder of the digits as 16x16 RGB PNGs (train/ and test/),
    and ``dense.safetensors``: ``build_net`` trained on those images, normalised as the
    search will normalise them (the mean and std are given to it as data options)."""
    from PIL import Image
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    (folder / "usernet.py").write_text(USER_MODULE)
    digits = load_digits()
    images = folder / "images"
    pixels = []
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        split = "test" if index % 5 == 0 else "train"
        (images / split / str(label)).mkdir(parents=True, exist_ok=True)
        grey = np.kron(image / 16.0 * 255.0, np.ones((2, 2))).astype(np.uint8)
        rgb = np.stack([grey] * 3, axis=-1)
        Image.fromarray(rgb).save(images / split / str(label) / f"{index:04d}.png")
        if split == "train":
            pixels.append(rgb)
    x = torch.tensor(np.stack(pixels), dtype=torch.float32).permute(0, 3, 1, 2) / 255.0
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    x = (x - mean[:, None, None]) / std[:, None, None]
    y = torch.tensor([t for i, t in enumerate(digits.target) if i % 5 != 0])
    model = _user_module(folder).build_net((3, IMAGE_SIZE, IMAGE_SIZE), 10)
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(dense_epochs):
        for batch in torch.randperm(len(y)).split(64):
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    weights = folder / "dense.safetensors"
    save_file(model.state_dict(), str(weights))
    return UserProject(folder, images, weights, mean.tolist(), std.tolist())


def _user_module(folder: Path) -> object:
    namespace: dict[str, object] = {}
    exec(compile((folder / "usernet.py").read_text(), "usernet.py", "exec"), namespace)
    return SimpleNamespace(**namespace)


# -- the search, end to end ----------------------------------------------------------------


def test_search_of_a_user_model_on_an_imagefolder_from_trained_weights(
    tmp_path: Path, monkeypatch, restore_environ
) -> None:
    project = write_user_project(tmp_path)
    monkeypatch.chdir(tmp_path)  # the user runs the search where usernet.py is
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    raw = project.space("own-net")
    spec = api.search_spec(
        "own-net",
        model="usernet:build_net",
        data="imagefolder",
        data_root="images",  # relative: to the working folder
        data_options=raw["data"]["options"],
        init_weights="dense.safetensors",
        train=raw["train"],
        space=raw["space"],
        trials=2,
        sampler="random",
    )
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    lines: list[str] = []
    outcome = api.run(
        spec, tracking_uri=uri, storage=str(tmp_path / "ray"), on_progress=lines.append
    )
    assert outcome.finished == 2 and outcome.failed == 0, lines

    # the loaded dense network, measured once, on the parent run and in the progress
    reference = api.reference("own-net", tracking_uri=uri)
    assert reference is not None and reference["val_accuracy"] > 0.7
    assert format_reference(reference) in lines

    # every trial starts from the trained weights: its first gated epoch beats an untrained net
    from archsearch.trial import measure_reference

    untrained = measure_reference(dataclasses.replace(spec.base, init_weights=None))
    client = mlflow.MlflowClient(uri)
    children = [
        r
        for r in client.search_runs([_experiment_id(client, "own-net")])
        if "archsearch.trial_id" in r.data.tags
    ]
    assert len(children) == 2
    for run in children:
        first = [m for m in client.get_metric_history(run.info.run_id, "epoch/val_accuracy")]
        step_one = next(m.value for m in first if m.step == 1)
        assert step_one > untrained["val_accuracy"] + 0.2, (step_one, untrained)

    front = api.front("own-net", tracking_uri=uri)
    assert front and {row["run_id"] for row in front} <= {r.info.run_id for r in children}

    # the pareto command prints the reference under its table; --json stays rows only
    table = run_cli_subprocess(tmp_path, "pareto", "own-net", "--tracking-uri", uri)
    assert table.returncode == 0 and table.stdout.rstrip().endswith(format_reference(reference))
    rows = run_cli_subprocess(tmp_path, "pareto", "own-net", "--json", "--tracking-uri", uri)
    assert [row["run_id"] for row in json.loads(rows.stdout)] == [r["run_id"] for r in front]

    # a front member rebuilds from usernet:build_net, exports and verifies
    exported = run_cli_subprocess(
        tmp_path, "export", front[0]["run_id"], "--format", "onnx", "-o", "best.onnx",
        "--tracking-uri", uri,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert (tmp_path / "best.onnx").stat().st_size > 0


def _experiment_id(client: mlflow.MlflowClient, name: str) -> str:
    return client.get_experiment_by_name(name).experiment_id


# -- the pieces ------------------------------------------------------------------------------


def test_the_dense_reference_is_kept_on_the_parent_run_and_drawn(tmp_path: Path) -> None:
    from archsearch.dashboard import collect, render
    from archsearch.tracking import SearchTracker

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SearchTracker("with-ref", tracking_uri=uri)
    assert tracker.reference() is None
    tracker.log_reference({"val_accuracy": 0.91, "test_accuracy": 0.9, "flops": 12345})
    tracker.finish(log_front_models=False)
    expected = {"source": "loaded", "val_accuracy": 0.91, "test_accuracy": 0.9, "flops": 12345}
    assert api.reference("with-ref", tracking_uri=uri) == expected
    # a resumed search reopens the same parent run and finds it there: nothing to measure
    assert SearchTracker("with-ref", tracking_uri=uri, resume=True).reference() == expected
    payload = collect("with-ref", uri)
    assert payload["reference"] == expected
    assert "ref-line" in render(payload)
    assert format_reference(expected) == (
        "dense reference (loaded weights): val 0.9100, test 0.9000, FLOPs 12,345"
    )
    assert format_reference(None) is None


def test_the_users_module_travels_to_ray_workers(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "travelnet.py").write_text(USER_MODULE)  # a name no other test imported
    (tmp_path / "userpkg" / "nets").mkdir(parents=True)
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "nets" / "__init__.py").write_text("")

    def spec(model: str, data: str) -> SimpleNamespace:
        return SimpleNamespace(base=SimpleNamespace(model=model, data=data))

    one_file = user_runtime_env(spec("travelnet:build_net", "digits"))
    assert one_file is not None and one_file["py_modules"] == [str(tmp_path / "travelnet.py")]
    package = user_runtime_env(spec("mlp", "userpkg.nets:load"))
    assert package is not None and package["py_modules"] == [str(tmp_path / "userpkg")]
    assert "mlflow.db" in package["excludes"] and "ray_results/" in package["excludes"]
    # bundled names and installed packages: nothing to carry
    assert user_runtime_env(spec("mlp", "digits")) is None
    assert user_runtime_env(spec("numpy.random:default_rng", "digits")) is None


def build_here(input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    return torch.nn.Linear(int(np.prod(input_shape)), num_classes)


def test_callables_become_import_paths_and_lambdas_are_one_line_errors() -> None:
    assert api.import_path_of(build_here, "model") == "test_user_search:build_here"
    assert api.import_path_of("usernet:build_net", "model") == "usernet:build_net"

    def nested(input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
        return build_here(input_shape, num_classes)

    for bad in (nested, lambda shape, classes: None):
        with pytest.raises(ConfigError, match="top level of a module") as error:
            api.import_path_of(bad, "model")
        assert "\n" not in str(error.value)


def test_a_spec_in_code_is_checked_like_a_file() -> None:
    from archsearch.space import SpaceError

    with pytest.raises(SpaceError, match="trials"):
        api.search_spec("bad", model="mlp", data="digits", space={"gate": ["arm"]}, trials=0)


def test_a_spec_in_code_chooses_objectives_and_latency() -> None:
    space = {"gate": ["arm"], "granularity": ["neuron"], "penalty.lambda": [0.1]}
    spec = api.search_spec(
        "timed",
        model="mlp",
        data="digits",
        space=space,
        objectives=["val_accuracy", "params", "latency"],
        latency={"runtime": "torch", "batch": 8},
    )
    assert spec.objectives == {"val_accuracy": "max", "params": "min", "latency": "min"}
    assert (spec.base.latency_runtime, spec.base.latency_batch) == ("torch", 8)
