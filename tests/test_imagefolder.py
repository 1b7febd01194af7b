"""The user's own data: an ImageFolder of PNGs, a callable returning torch Datasets, data that
streams through a DataLoader, and one-line errors for every malformed input."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_space, write_space
from PIL import Image

from archsearch.cli import main
from archsearch.config import TrialConfig
from archsearch.data import get_dataset_info, load_dataset
from archsearch.space import SpaceError, load_spec
from archsearch.trial import run_trial

CLASSES = ("zero", "one", "two")


def write_images(root: Path, splits: dict[str, int], size: int = 8) -> Path:
    """``root/<split>/<class>/<n>.png``: up to ``splits[split]`` digits of each of 3 classes,
    grey, ``size`` pixels a side (the 8x8 digits scaled up)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    start = 0
    for split, per_class in splits.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            images = bunch.images[bunch.target == label][start : start + per_class]
            for i, image in enumerate(images):
                pixels = (image * 255 / 16).astype(np.uint8)
                Image.fromarray(pixels, "L").resize((size, size)).save(folder / f"{i}.png")
        start += per_class
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"), {"train": 120, "test": 40}, size=12)


SMALL_TRIAL = {
    "model": "mlp",
    "model_options": {"hidden": [32]},
    "epochs": 3,
    "finetune_epochs": 1,
    "batch_size": 32,
    "granularity": "neuron",
}


def test_in_memory_and_streamed_loads_agree(folder: Path) -> None:
    options = {"image_size": 8, "grayscale": True}
    held = load_dataset("imagefolder", root=folder, **options)
    streamed = load_dataset("imagefolder", root=folder, in_memory=False, **options)
    assert held.in_memory and not streamed.in_memory
    assert "(streamed" in streamed.describe() and "(streamed" not in held.describe()
    assert held.input_shape == streamed.input_shape == (1, 8, 8) and held.num_classes == 3
    assert [held.size(s) for s in ("train", "val", "test")] == [324, 36, 120]
    assert get_dataset_info("imagefolder").geometry_at(folder, options) == ((1, 8, 8), 3)
    for split in ("train", "val", "test"):
        xs, ys = next(held.batches(split, 500)), next(streamed.batches(split, 500))
        assert torch.equal(xs[1], ys[1]) and torch.allclose(xs[0], ys[0], atol=1e-4)
    assert abs(float(held.train_x.mean())) < 0.05  # normalised by the training images
    config = TrialConfig(**SMALL_TRIAL, data="imagefolder")
    runs = [run_trial(config, data=data) for data in (held, streamed)]
    for history in zip(*(r.history for r in runs), strict=True):
        assert history[0]["val_accuracy"] == pytest.approx(history[1]["val_accuracy"], abs=0.03)
    assert runs[0].metrics["val_accuracy"] > 0.8  # three classes: far above chance


def test_colour_and_own_size_and_stats(folder: Path) -> None:
    data = load_dataset("imagefolder", root=folder, mean=[0.5] * 3, std=[0.25] * 3)
    assert data.input_shape == (3, 12, 12)  # the images' own size, RGB by default
    assert float(data.train_x.min()) == pytest.approx(-2.0)  # (0 - 0.5) / 0.25


def test_val_folder_is_used_and_missing_test_is_carved(tmp_path: Path) -> None:
    root = write_images(tmp_path, {"train": 50, "val": 10})
    data = load_dataset("imagefolder", root=root, grayscale=True)
    assert (data.size("train"), data.size("val"), data.size("test")) == (120, 30, 30)
    assert "test: a fixed 20% of train/" in data.describe()


def test_train_command_on_an_image_folder(folder: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "trial"
    data = ["--data", "imagefolder", "--data-root", str(folder)]
    data += ["--data-option", "image_size=8", "--data-option", "grayscale=true"]
    model = ["--model", "mlp", "--model-option", "hidden=[16]", "--epochs", "1"]
    rest = ["--finetune-epochs", "0", "--batch-size", "32", "--out", str(out), "--quiet"]
    code = main(["train", *data, *model, *rest])
    assert code == 0, capsys.readouterr().err
    assert "imagefolder: 324 train / 36 val / 120 test, input 1x8x8" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["val_accuracy"] > 1 / 3


def test_space_file_takes_options_directly_in_data(folder: Path, tmp_path: Path) -> None:
    data = {"name": "imagefolder", "root": str(folder), "image_size": 8, "grayscale": True}
    spec = load_spec(write_space(tmp_path, tiny_space(data=data)))
    assert spec.base.data_options == {"image_size": 8, "grayscale": True}
    data["colour"] = "red"
    with pytest.raises(SpaceError, match=r"data\.colour: unknown key; expected one of: name.*"):
        load_spec(write_space(tmp_path, tiny_space(data=data)))
    data.pop("colour")
    data["options"] = {"image_size": 16}
    with pytest.raises(SpaceError, match=r"data\.image_size: given twice"):
        load_spec(write_space(tmp_path, tiny_space(data=data)))


USER_DATA = '''
import torch
from torch.utils.data import TensorDataset


def _blobs(n, seed):
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(3, (n,), generator=gen)
    return TensorDataset(torch.randn(n, 2, 4, 4, generator=gen) + y.view(-1, 1, 1, 1), y)


class Labelled(torch.utils.data.Dataset):
    """Items with int labels and a classes attribute, as a user might write them."""
    classes = ["a", "b", "c", "d"]

    def __init__(self, n):
        self.inner = _blobs(n, 5)

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        x, y = self.inner[i]
        return x, int(y)


def load(root=None, n=96):
    return _blobs(n, 0), _blobs(n // 4, 1)


def three(n=64):
    return {"train": Labelled(n), "val": _blobs(16, 2), "test": _blobs(16, 3)}


def wrong(kind="one"):
    if kind == "one":
        return _blobs(8, 0)
    if kind == "items":
        return [1, 2, 3], [4]
    return _blobs(8, 0), torch.utils.data.TensorDataset(torch.zeros(4, 3))
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "userdata.py").write_text(textwrap.dedent(USER_DATA))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_callable_data_set(user_module: Path, capsys) -> None:
    data = load_dataset("userdata:load", n=80)
    assert data.input_shape == (2, 4, 4) and data.num_classes == 3 and data.in_memory
    assert (data.size("train"), data.size("val"), data.size("test")) == (72, 8, 20)
    three = load_dataset("userdata:three")
    assert three.num_classes == 4 and three.size("val") == 16  # classes attribute; own val
    streamed = load_dataset("userdata:three", in_memory=False)
    assert not streamed.in_memory and streamed.num_classes == 4
    assert get_dataset_info("userdata:load").option_defaults() == {"n": 96, "in_memory": "auto"}
    out = user_module / "trial"
    args = ["--model", "mlp", "--epochs", "1", "--finetune-epochs", "0", "--out", str(out)]
    assert main(["train", "--data", "userdata:three", "--quiet", *args]) == 0
    assert "userdata:three: 64 train / 16 val / 16 test" in capsys.readouterr().out


def test_a_space_file_with_a_callable_data_set(user_module: Path) -> None:
    data = {"name": "userdata:load", "n": 48}
    spec = load_spec(write_space(user_module, tiny_space(data=data)))
    assert spec.base.data == "userdata:load" and spec.base.data_options == {"n": 48}


def _one_line_error(argv: list[str], capsys) -> str:
    code = main(["train", "--quiet", "--epochs", "1", "--finetune-epochs", "0", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    return err


def _bad_folders(root: Path) -> dict[str, tuple[Path, str]]:
    """Folders that are each wrong in one way, with the words their error must hold."""
    write_images(root / "one", {"train": 3})
    for name in ("one", "two"):
        shutil.rmtree(root / "one" / "train" / name)
    write_images(root / "empty_class", {"train": 3})
    for png in (root / "empty_class" / "train" / "two").glob("*.png"):
        png.unlink()
    write_images(root / "val_classes", {"train": 3, "val": 2})
    (root / "val_classes" / "val" / "two").rename(root / "val_classes" / "val" / "three")
    write_images(root / "sizes", {"train": 3})
    Image.new("L", (5, 9)).save(root / "sizes" / "train" / "one" / "odd.png")
    (root / "no_train" / "test").mkdir(parents=True)
    return {
        "missing root": (root / "absent", "does not exist"),
        "no train/": (root / "no_train", "no train/ folder"),
        "one class": (root / "one", "1 class folder (zero); a classifier needs at least 2"),
        "no images": (root / "empty_class", "two has no images"),
        "val classes": (root / "val_classes", "missing: two; extra: three"),
        "sizes": (root / "sizes", "set image_size"),
    }


def test_bad_image_folders_are_one_line_errors(tmp_path: Path, capsys) -> None:
    for case, (root, words) in _bad_folders(tmp_path).items():
        err = _one_line_error(["--data", "imagefolder", "--data-root", str(root)], capsys)
        assert words in err, (case, err)
    err = _one_line_error(["--data", "imagefolder"], capsys)
    assert "needs a data root" in err


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--data", "userdata:wrong"], "returned a TensorDataset; expected (train, test)"),
        (["--data", "userdata:wrong", "--data-option", "kind=items"], "train[0] is an int"),
        (["--data", "userdata:wrong", "--data-option", "kind=x"], "expected an (x tensor"),
        (["--data", "userdata:nothing"], "has no 'nothing'"),
        (["--data", "nomodule:load"], "cannot import module 'nomodule'"),
        (["--data", "userdata:load", "--data-option", "k=1"], "has no option 'k'"),
        (["--data", "userdata:three", "--data-root", "."], "has no `root` parameter"),
    ],
)
def test_bad_callable_data_sets_are_one_line_errors(
    user_module: Path, argv: list[str], words: str, capsys
) -> None:
    assert words in _one_line_error(argv, capsys)
