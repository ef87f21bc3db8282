"""Data sets, registered by name. ``load_dataset("mnist5k")`` works offline right after install.

A data set factory is ``fn(root=None, download=False, **options) -> Dataset``.
"""
from __future__ import annotations

from robrep.data.base import Dataset, DatasetError, Split, Task, cache_dir, data_root
from robrep.registry import DATASETS

# Importing the modules registers the built-in data sets.
from robrep.data import mnist as _mnist  # noqa: F401,E402
from robrep.data import colormnist as _colormnist  # noqa: F401,E402
from robrep.data import celeba as _celeba  # noqa: F401,E402


def load_dataset(name: str, root=None, download: bool = False, **options) -> Dataset:
    """Load a registered data set by name (see ``list_datasets()``)."""
    return DATASETS.create(name, root=root, download=download, **options)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.list(pattern)


__all__ = [
    "Dataset", "DatasetError", "Split", "Task", "cache_dir", "data_root",
    "load_dataset", "list_datasets",
]
