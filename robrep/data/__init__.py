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
from robrep.data import cifar10 as _cifar10  # noqa: F401,E402


def load_dataset(name: str, root=None, download: bool = False, **options) -> Dataset:
    """Load a registered data set by name (see ``list_datasets()``). ``NAME-valid``: its validation view, the
    training split less a held-out part as ``train`` and that part as ``test`` (``robrep.data.splits``)."""
    base, split = splits.parse(name)
    if split == "valid" and name not in DATASETS:
        if base not in DATASETS:
            raise DatasetError(f"unknown dataset {name!r}: {base!r} (whose validation view it would be) is not "
                               f"registered; known datasets: {', '.join(DATASETS.list())} (each also as NAME-valid)")
        return splits.validation_view(DATASETS.get(base), base, root=root, download=download, **options)
    factory = DATASETS.get(name)
    try:
        return factory(**_accepted(factory, {"root": root, "download": download}), **options)
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001  a plugin's reader: its error, named, never a traceback
        raise DatasetError(f"data set {name!r} ({DATASETS.origin(name)}) failed to load: {type(e).__name__}: {e}") from e


def _accepted(factory, options: dict) -> dict:
    """``options`` the factory takes; one it does not take is dropped when unset, refused when set."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return options
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return options
    given = {k: v for k, v in options.items() if k in params}
    unused = [k for k, v in options.items() if k not in params and v not in (None, False)]
    if unused:
        raise DatasetError(f"data set {getattr(factory, '__name__', factory)!r} takes no {', '.join(unused)} "
                           f"(it reads no folder); leave {', '.join('--' + k.replace('_', '-') for k in unused)} out")
    return given


def reads_folder(name: str) -> bool:
    """Whether data set ``name`` is read from a folder (``--data-root``); embedded ones set ``reads_folder = False``
    on their factory. An unknown name says True (loading it reports the name)."""
    base, _ = splits.parse(name)
    if base not in DATASETS:
        return True
    return getattr(DATASETS.get(base), "reads_folder", True)


def list_datasets(pattern: str = "*") -> list[str]:
    return DATASETS.list(pattern)


__all__ = [
    "Dataset", "DatasetError", "Split", "Task", "cache_dir", "data_root",
    "load_dataset", "list_datasets", "reads_folder",
]
