"""Datasets for training and offline evaluation, split into train / val / test the same way
every time for a given seed.

The split is part of a checkpoint's metadata (dataset spec + ``split_seed``), so evaluation can
rebuild exactly the held-out test images a model never saw. ``val`` is held out from training
too and is used only for calibration.

Specs: ``digits`` (scikit-learn's bundled 8x8 handwritten digits: real data, no download),
``cifar10[:ROOT]`` (torchvision; downloads when the internet is reachable), ``imagefolder:PATH``
(one folder per class, Caltech-256 style).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from shared.errors import IsplitEEError
from shared.transforms import resize

__all__ = ["DatasetError", "Splits", "load_dataset", "split_indices"]

VAL_FRACTION = 0.15
TEST_FRACTION = 0.25


class DatasetError(IsplitEEError):
    """A dataset cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class Splits:
    """Train, calibration and held-out test sets; items are (float image in [0, 1], label)."""

    train: Dataset
    val: Dataset
    test: Dataset
    class_names: tuple[str, ...]
    spec: str


def split_indices(
    labels: np.ndarray, seed: int, fractions: tuple[float, float] = (VAL_FRACTION, TEST_FRACTION)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/val/test indices: every class keeps its share in every split."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n_val = round(len(idx) * fractions[0])
        n_test = round(len(idx) * fractions[1])
        parts[1] += idx[:n_val].tolist()
        parts[2] += idx[n_val : n_val + n_test].tolist()
        parts[0] += idx[n_val + n_test :].tolist()
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)  # type: ignore[return-value]


def _digits(input_size: int, seed: int) -> Splits:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError(
            "the digits dataset needs scikit-learn: pip install 'isplitee[train]'"
        ) from exc
    data = load_digits()
    images = torch.from_numpy(data.images.astype(np.float32) / 16.0).unsqueeze(1)
    images = resize(images, input_size).clamp_(0, 1).expand(-1, 3, -1, -1).contiguous()
    labels = torch.from_numpy(data.target.astype(np.int64))
    full = TensorDataset(images, labels)
    tr, va, te = split_indices(data.target, seed)
    names = tuple(str(n) for n in data.target_names)
    return Splits(Subset(full, tr), Subset(full, va), Subset(full, te), names, "digits")


def _image_transform(input_size: int):
    from torchvision import transforms

    return transforms.Compose(
        [transforms.Resize((input_size, input_size), antialias=True), transforms.ToTensor()]
    )


def _cifar10(root: str, input_size: int, seed: int) -> Splits:
    from torchvision.datasets import CIFAR10

    tf = _image_transform(input_size)
    try:
        train_full = CIFAR10(root, train=True, download=True, transform=tf)
        test = CIFAR10(root, train=False, download=True, transform=tf)
    except Exception as exc:
        raise DatasetError(
            f"cannot get CIFAR-10 into {root!r} ({type(exc).__name__}: {exc}); it downloads "
            "once where the internet is reachable, or place the extracted "
            "'cifar-10-batches-py' folder there; without either, use --dataset digits"
        ) from exc
    labels = np.asarray(train_full.targets)
    tr, va, _ = split_indices(labels, seed, fractions=(0.1, 0.0))
    names = tuple(train_full.classes)
    return Splits(Subset(train_full, tr), Subset(train_full, va), test, names, f"cifar10:{root}")


def _imagefolder(path: str, input_size: int, seed: int) -> Splits:
    from torchvision.datasets import ImageFolder

    if not Path(path).is_dir():
        raise DatasetError(f"imagefolder:{path}: no such directory (one sub-folder per class)")
    try:
        full = ImageFolder(path, transform=_image_transform(input_size))
    except (FileNotFoundError, OSError) as exc:
        raise DatasetError(f"imagefolder:{path}: {exc}") from exc
    labels = np.asarray(full.targets)
    tr, va, te = split_indices(labels, seed)
    names = tuple(full.classes)
    return Splits(
        Subset(full, tr), Subset(full, va), Subset(full, te), names, f"imagefolder:{path}"
    )


def load_dataset(spec: str, input_size: int, seed: int = 0) -> Splits:
    """Build the splits named by ``spec`` with images resized to ``input_size``."""
    name, _, arg = spec.partition(":")
    if name == "digits":
        return _digits(input_size, seed)
    if name == "cifar10":
        root = arg or os.environ.get("ISPLITEE_DATA", os.path.expanduser("~/.cache/isplitee/data"))
        return _cifar10(root, input_size, seed)
    if name == "imagefolder":
        if not arg:
            raise DatasetError("imagefolder needs a path: --dataset imagefolder:/data/caltech256")
        return _imagefolder(arg, input_size, seed)
    raise DatasetError(f"unknown dataset {spec!r}: use digits, cifar10[:ROOT] or imagefolder:PATH")
