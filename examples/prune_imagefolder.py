"""Prune a network of your own, on images in folders, starting from its trained weights.

End to end, from Python, in about half a minute on 2 CPU cores:

1. writes an ImageFolder (``train/<class>/*.png``, ``test/<class>/*.png``) of scikit-learn's
   bundled 8x8 digits, scaled to 16x16 RGB PNGs (no download), unless you pass your own;
2. trains the small CNN defined below, densely, and saves ``dense.safetensors``;
3. searches gate methods and penalty weights from those weights with ``archsearch.api``
   (Ray + Optuna, every trial logged to a SQLite MLflow store in the work folder);
4. prints the accuracy/FLOPs front and the dense reference, and exports the cheapest front
   member within 5 points of the dense accuracy to ONNX, verified against its weights.

    python examples/prune_imagefolder.py                  # everything in ./prune-example
    python examples/prune_imagefolder.py --images DIR     # your own ImageFolder of RGB images

Run it again after deleting the work folder (or pass another ``--work``). Afterwards:
``archsearch pareto prune-imagefolder --tracking-uri sqlite:///prune-example/mlflow.db``,
or ``archsearch dashboard`` / ``archsearch ui`` with the same flag.

Every trial imports ``build_cnn`` again, from this file by name (``prune_imagefolder:build_cnn``):
that is why it is defined at the top level and why the script's work is guarded by
``if __name__ == "__main__":`` at the bottom.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torchvision import datasets, transforms

from archsearch import api
from archsearch.pareto import format_front_table, format_reference

NAME = "prune-imagefolder"
IMAGE_SIZE = 16


def build_cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
    """The network to prune: two conv blocks and a linear classifier. archsearch calls it with
    the data's ``input_shape`` (channels, height, width) and ``num_classes``, plus the model
    options (here ``width``) as keywords."""
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2),  # any image size: a 2x2 map into the classifier
        nn.Flatten(),
        nn.Linear(2 * width * 4, num_classes),
    )


def write_digits_imagefolder(root: Path, seed: int = 0) -> Path:
    """scikit-learn's digits as PNGs: a fixed 80/20 train/test split, one folder per class."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(seed).permutation(len(digits.target))
    test = set(order[: len(order) // 5].tolist())
    for index, (image, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        split = "test" if index in test else "train"
        folder = root / split / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.kron(image / 16.0 * 255.0, np.ones((2, 2))).astype(np.uint8)  # 8x8 -> 16x16
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(folder / f"{index:04d}.png")
    return root


def channel_stats(root: Path) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images: the normalisation the dense training
    below and every trial of the search share (passed to the search as data options)."""
    images = datasets.ImageFolder(str(root / "train"), transform=transforms.ToTensor())
    stacked = torch.stack([image for image, _ in images])
    return stacked.mean(dim=(0, 2, 3)).tolist(), stacked.std(dim=(0, 2, 3)).tolist()


def train_dense(root: Path, out: Path, mean: list[float], std: list[float], epochs: int) -> Path:
    """Train ``build_cnn`` densely (the network you already have, in real life) and save its
    state dict as safetensors, the file the search starts every trial from."""
    torch.manual_seed(0)
    transform = transforms.Compose(
        [
            transforms.Resize((IMAGE_SIZE, IMAGE_SIZE)),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    train = datasets.ImageFolder(str(root / "train"), transform=transform)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=True)
    model = build_cnn((3, IMAGE_SIZE, IMAGE_SIZE), len(train.classes))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(epochs):
        correct = 0
        for x, y in loader:
            optimiser.zero_grad()
            logits = model(x)
            nn.functional.cross_entropy(logits, y).backward()
            optimiser.step()
            correct += int((logits.argmax(1) == y).sum())
        print(f"dense epoch {epoch + 1}/{epochs}: train accuracy {correct / len(train):.3f}")
    save_file(model.state_dict(), str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, help="an ImageFolder (train/, test/) of RGB images")
    parser.add_argument("--work", type=Path, default=Path("prune-example"), help="work folder")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--dense-epochs", type=int, default=4)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    images = args.images or write_digits_imagefolder(work / "images")
    mean, std = channel_stats(images)
    weights = train_dense(images, work / "dense.safetensors", mean, std, args.dense_epochs)

    spec = api.search_spec(
        NAME,
        model=build_cnn,  # becomes "prune_imagefolder:build_cnn"
        model_options={"width": 16},
        data="imagefolder",
        data_root=images,
        data_options={"image_size": IMAGE_SIZE, "mean": mean, "std": std},
        init_weights=weights,
        train={"epochs": 4, "finetune_epochs": 1, "batch_size": 64, "gate_lr": 0.05},
        space={
            "gate": ["hard_concrete", "trainable_gate"],
            "granularity": ["channel"],
            "penalty.lambda": {"loguniform": [0.02, 1.0]},
        },
        trials=args.trials,
        concurrency=2,
    )
    uri = f"sqlite:///{work / 'mlflow.db'}"
    api.run(spec, tracking_uri=uri, storage=str(work / "ray_results"))

    rows = api.front(NAME, tracking_uri=uri)  # cheapest first
    reference = api.reference(NAME, tracking_uri=uri)
    print(format_front_table(rows))
    print(format_reference(reference) or "")
    # the cheapest front member within 5 points of the dense network, else the most accurate
    close = [r for r in rows if r["val_accuracy"] >= reference["val_accuracy"] - 0.05]
    best = close[0] if close else max(rows, key=lambda row: row["val_accuracy"])
    report = api.export(best["run_id"], "onnx", work / "best.onnx", tracking_uri=uri)
    print(
        f"exported run {best['run_id'][:8]} to {report.path} ({report.bytes:,} bytes, "
        f"{report.flops:,} FLOPs of {report.dense_flops:,} dense, max |diff| "
        f"{report.max_abs_diff:.1e}) in {time.perf_counter() - started:.0f}s overall"
    )


if __name__ == "__main__":
    main()
