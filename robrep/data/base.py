"""What every data set gives: splits of images in [0,1] and named downstream tasks."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch


class DatasetError(ValueError):
    """A data set folder is missing or malformed; the message says what was expected."""


@dataclass(frozen=True)
class Task:
    """A downstream classification task on a data set."""

    name: str
    n_classes: int
    class_names: tuple[str, ...] = ()



# Images are stored as uint8 and fed to every encoder as float32 pixels in this range (x / 255): the input bounds
# every attack, the Smooth Encoder's selection and the image grid respect, read from the attacked model.
PIXELS: tuple[float, float] = (0.0, 1.0)

@dataclass
class Split:
    """One split: images stored as uint8 (N, C, H, W), labels per task name.

    Images are kept as uint8 (a quarter of the memory of float32; CelebA and the
    7x ColorMNIST would not fit comfortably otherwise). ``x`` and ``batch``
    return float32 in [0, 1].
    """

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: dict[str, torch.Tensor] = field(default_factory=dict)  # task -> (N,) int64

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DatasetError(
                f"Split.images must be a uint8 tensor of shape (N, C, H, W), got "
                f"{self.images.dtype} of shape {tuple(self.images.shape)}"
            )
        n = self.images.shape[0]
        for task, y in self.labels.items():
            if y.shape != (n,):
                raise DatasetError(f"labels of task {task!r} have shape {tuple(y.shape)}, expected ({n},)")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def x(self) -> torch.Tensor:
        """All images as float32 in [0, 1], shape (N, C, H, W). Allocates a new tensor."""
        return self.images.float().div_(255.0)

    def batch(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Images ``index`` as float32 in [0, 1]."""
        return self.images[index].float().div_(255.0)

    def subset(self, index: torch.Tensor) -> "Split":
        return Split(self.images[index], {t: y[index] for t, y in self.labels.items()})


@dataclass
class Dataset:
    name: str
    train: Split
    test: Split
    tasks: tuple[Task, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise DatasetError(
            f"data set {self.name!r} has no task {name!r}; its tasks are: "
            + ", ".join(t.name for t in self.tasks)
        )


def cache_dir() -> Path:
    """robrep's cache folder: $ROBREP_CACHE, else $XDG_CACHE_HOME/robrep, else ~/.cache/robrep."""
    if os.environ.get("ROBREP_CACHE"):
        return Path(os.environ["ROBREP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "robrep"


def data_root(root: str | os.PathLike | None, name: str) -> Path:
    """Where a folder-backed data set lives: ``root`` if given, else $ROBREP_DATA/<name>, else <cache>/data/<name>."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("ROBREP_DATA"):
        return Path(os.environ["ROBREP_DATA"]).expanduser() / name
    return cache_dir() / "data" / name
