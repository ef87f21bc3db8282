"""ColorMNIST: every MNIST digit in each of the 7 non-black corners of the RGB cube.

Colour id c in 1..7: red = c & 1, green = c & 2, blue = c & 4 (channels R, G, B).
Two tasks: ``digit`` (10 classes) and ``color`` (7 classes, label c - 1).
Image n*7 + (c - 1) of a split is digit n of the MNIST split in colour c.
"""
from __future__ import annotations

import torch

from robrep.data.base import Dataset, DatasetError, Split, Task
from robrep.data.mnist import DIGIT, mnist, mnist5k
from robrep.data.splits import validation_view
from robrep.registry import DATASETS

COLOR_NAMES = ("red", "green", "yellow", "blue", "magenta", "cyan", "white")
COLOR = Task("color", 7, COLOR_NAMES)


def color_masks() -> torch.Tensor:
    """(7, 3) 0/1 masks; row c - 1 is colour id c."""
    c = torch.arange(1, 8)
    return torch.stack([(c & 1) > 0, (c & 2) > 0, (c & 4) > 0], dim=1).to(torch.uint8)


def colorize(split: Split) -> Split:
    gray = split.images  # (N, 1, H, W) uint8
    n = gray.shape[0]
    # (N, 1, 1, H, W) * (1, 7, 3, 1, 1) -> (N, 7, 3, H, W) -> (7N, 3, H, W)
    images = (gray[:, None] * color_masks()[None, :, :, None, None]).reshape(n * 7, 3, *gray.shape[2:])
    digit = split.labels["digit"].repeat_interleave(7)
    color = torch.arange(7).repeat(n)
    return Split(images, {"digit": digit, "color": color})


def _colormnist(base: Dataset, name: str) -> Dataset:
    return Dataset(name, colorize(base.train), colorize(base.test), (DIGIT, COLOR))


@DATASETS.register("colormnist5k")
def colormnist5k(root=None, download: bool = False, split: str = "test") -> Dataset:
    """ColorMNIST built from the embedded 5,000 digits: 28,000 train / 7,000 test images. ``split="valid"``: built
    from mnist5k's validation view (24,500 train / 3,500 validation images), so no digit is in both."""
    return _colormnist(_base(mnist5k, "mnist5k", split, {}), "colormnist5k")


colormnist5k.reads_folder = False  # built from the embedded digits


@DATASETS.register("colormnist")
def colormnist(root=None, download: bool = False, split: str = "test") -> Dataset:
    """ColorMNIST built from full MNIST (see ``mnist``): 420,000 train / 70,000 test images (``split="valid"``:
    from MNIST's validation view)."""
    return _colormnist(_base(mnist, "mnist", split, {"root": root, "download": download}), "colormnist")


def _base(factory, name: str, split: str, kwargs: dict) -> Dataset:
    if split not in ("test", "valid"):
        raise DatasetError(f"split must be 'test' or 'valid', got {split!r}")
    return factory(**kwargs) if split == "test" else validation_view(factory, name, **kwargs)
