"""Data sets, registered by name. ``load_dataset("mnist5k")`` works offline right after install.

A data set factory is ``fn(root=None, download=False, **options) -> Dataset``.
"""
from __future__ import annotations

from robrep.data.base import Dataset, DatasetError, Split, Task, cache_dir, data_root
from robrep.data import splits
from robrep.registry import DATASETS

# Importing the modules registers the built-in data sets.
from robrep.data import mnist as _mnist  # noqa: F401,E402
from robrep.data import colormnist as _colormnist  # noqa: F401,E402
from robrep.data import celeba as _celeba  # noqa: F401,E402


def load_dataset(name: str, root=None, download: bool = False, **options) -> Dataset:
    """Load a registered data set by name (see ``list_datasets()``). ``NAME-valid``: its validation view, the
    training split less a held-out part as ``train`` and that part as ``test`` (``robrep.data.splits``)."""
    base, split = splits.parse(name)
    if split == "valid" and name not in DATASETS:
        if base not in DATASETS:
            raise DatasetError(f"unknown dataset {name!r}: {base!r} (whose validation view it would be) is not "
                               f"registered; known datasets: {', '.join(DATASETS.list())} (each also as NAME-valid)")
        return splits.validation_view(DATASETS.get(base), base, root=root, download=download, **options)
    return DATASETS.create(name, root=root, download=download, **options)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.list(pattern)


__all__ = [
    "Dataset", "DatasetError", "Split", "Task", "cache_dir", "data_root",
    "load_dataset", "list_datasets",
]
