"""Datasets: honest splits, clear errors, and data small enough to learn in a test."""

import dataclasses
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from archsearch.config import TrialConfig
from archsearch.data import (
    DEBIAN_FASHION_MNIST,
    SPLITS,
    DataSplits,
    StreamSplit,
    carve_validation,
    get_dataset_info,
    iterate_batches,
    list_datasets,
    load_dataset,
)
from archsearch.errors import ConfigError, DataNotFoundError, UnknownNameError
from archsearch.trial import run_trial


def test_digits_splits_add_up() -> None:
    data = load_dataset("digits", val_fraction=0.1)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.test_y) == 360  # a stratified 20% of 1797
    assert len(data.train_y) + len(data.val_y) == 1797 - 360
    assert len(data.val_y) == round(0.1 * (1797 - 360))
    assert data.train_x.dtype == torch.float32 and data.train_y.dtype == torch.int64
    assert abs(data.train_x.mean().item()) < 0.05  # normalised
    assert "1293 train / 144 val / 360 test" in data.describe()


def test_digits_test_split_is_the_same_for_every_seed() -> None:
    a, b = load_dataset("digits", seed=0), load_dataset("digits", seed=1)
    assert torch.equal(a.test_x, b.test_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.val_y, b.val_y)


def test_validation_is_carved_from_training_without_overlap() -> None:
    train_idx, val_idx = carve_validation(1000, 0.2, seed=3)
    assert len(val_idx) == 200
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(1000))
    again, _ = carve_validation(1000, 0.2, seed=3)
    assert torch.equal(train_idx, again)


def test_no_validation_row_is_a_training_row() -> None:
    data = load_dataset("synthetic", val_fraction=0.2)
    distances = torch.cdist(data.val_x.flatten(1), data.train_x.flatten(1))
    assert distances.min() > 0


def test_synthetic_is_learnable_by_logistic_regression() -> None:
    torch.manual_seed(0)
    data = load_dataset("synthetic")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, data.num_classes))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(10):
        optimiser.zero_grad()
        nn.functional.cross_entropy(model(data.train_x), data.train_y).backward()
        optimiser.step()
    for x, y in [(data.train_x, data.train_y), (data.val_x, data.val_y)]:
        assert (model(x).argmax(1) == y).float().mean() > 0.9


def test_synthetic_options_shape_the_data() -> None:
    data = load_dataset("synthetic", n_samples=100, input_shape=[3, 4, 4], num_classes=3)
    assert data.input_shape == (3, 4, 4) and data.num_classes == 3
    assert len(data.train_y) + len(data.val_y) == 100 and len(data.test_y) == 25


def test_iterate_batches_visits_every_example_once() -> None:
    x, y = torch.arange(10.0).unsqueeze(1), torch.arange(10)
    batches = list(
        iterate_batches(x, y, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    )
    assert [len(yb) for _, yb in batches] == [4, 4, 2]
    assert sorted(torch.cat([yb for _, yb in batches]).tolist()) == list(range(10))
    assert all(torch.equal(xb.squeeze(1).long(), yb) for xb, yb in batches)
    in_order = torch.cat([yb for _, yb in iterate_batches(x, y, 3, shuffle=False)])
    assert torch.equal(in_order, y)


@pytest.mark.skipif(
    not DEBIAN_FASHION_MNIST.is_dir(),
    reason=f"no Fashion-MNIST at {DEBIAN_FASHION_MNIST} (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_loads_from_the_debian_path() -> None:
    data = load_dataset("fashion_mnist")
    assert len(data.train_y) + len(data.val_y) == 60_000 and len(data.test_y) == 10_000
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert set(data.test_y.unique().tolist()) == set(range(10))


def test_missing_files_name_every_place_looked(tmp_path: Path) -> None:
    root = tmp_path / "nothing-here"
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("mnist", root=root)
    message = str(err.value)
    assert str(root) in message and str(root / "MNIST" / "raw") in message
    assert "download: true" in message and "\n" not in message
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", root=root)


def test_idx_files_are_read_from_a_torchvision_layout(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for stem, n in [("train", 20), ("t10k", 5)]:
        images = bytes([0, 0, 8, 3]) + _ints(n, 28, 28) + bytes(range(256)) * (n * 784 // 256 + 1)
        (raw / f"{stem}-images-idx3-ubyte").write_bytes(images[: 16 + n * 784])
        (raw / f"{stem}-labels-idx1-ubyte").write_bytes(
            bytes([0, 0, 8, 1]) + _ints(n) + bytes(i % 10 for i in range(n))
        )
    data = load_dataset("mnist", root=tmp_path, val_fraction=0.25)
    assert (len(data.train_y), len(data.val_y), len(data.test_y)) == (15, 5, 5)
    assert data.input_shape == (1, 28, 28)


def _ints(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "big") for v in values)


def test_bad_val_fraction_is_a_config_error() -> None:
    for bad in (0.0, 0.6, -0.1):
        with pytest.raises(ConfigError, match="val_fraction"):
            load_dataset("digits", val_fraction=bad)


def test_unknown_names_and_options() -> None:
    with pytest.raises(UnknownNameError, match=r"'imagenet'.*digits"):
        load_dataset("imagenet")
    with pytest.raises(ConfigError, match="no option 'n_samples'; its options are: download"):
        load_dataset("fashion_mnist", n_samples=3)
    assert {"fashion_mnist", "mnist", "cifar10", "digits", "synthetic"} <= set(list_datasets())


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("digits", {}),
        ("synthetic", {}),
        ("synthetic", {"input_shape": [3, 5, 7], "num_classes": 6}),
    ],
)
def test_registry_geometry_matches_the_loaded_data(name: str, options: dict) -> None:
    """A search space builds its model from the registry's geometry: it must be the truth."""
    data = load_dataset(name, **options)
    assert get_dataset_info(name).geometry(options) == (data.input_shape, data.num_classes)


def test_every_bundled_data_set_knows_its_geometry_without_loading() -> None:
    for name in ("fashion_mnist", "mnist", "cifar10", "digits", "synthetic"):
        shape, classes = get_dataset_info(name).geometry()
        assert all(d > 0 for d in shape) and classes >= 2
    assert get_dataset_info("imagefolder").geometry() is None  # it lies in the folder


def test_in_memory_batches_are_the_tensor_slices() -> None:
    """The loops draw through DataSplits.batches: in memory, exactly iterate_batches."""
    data = load_dataset("synthetic", n_samples=64)
    drawn = data.batches("train", 10, shuffle=True, generator=torch.Generator().manual_seed(4))
    sliced = iterate_batches(
        data.train_x, data.train_y, 10, shuffle=True, generator=torch.Generator().manual_seed(4)
    )
    for (xa, ya), (xb, yb) in zip(drawn, sliced, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def _streamed(data: DataSplits) -> DataSplits:
    held = {s: TensorDataset(data.split(s).x, data.split(s).y) for s in SPLITS}
    return dataclasses.replace(data, **{s: StreamSplit(ds) for s, ds in held.items()})


def test_a_streamed_trial_gives_the_in_memory_numbers() -> None:
    """Streaming draws the same shuffles without touching torch's global generator, so a
    seeded trial gives the same numbers whichever way its data is held."""
    config = TrialConfig(
        model="mlp", model_options={"hidden": [16]}, data="digits", epochs=2, batch_size=64
    )
    held = load_dataset("digits")
    streamed = _streamed(held)
    assert "(streamed)" in streamed.describe() and streamed.size("val") == 144
    with pytest.raises(TypeError, match="streamed"):
        _ = streamed.val_x
    a, b = run_trial(config, data=held), run_trial(config, data=streamed)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    assert a.metrics["val_accuracy"] == b.metrics["val_accuracy"]
    assert a.metrics["test_accuracy"] == b.metrics["test_accuracy"]
