"""Validation splits: a held-out part of a data set's training split, for choosing configs without the test split.

``load_dataset("mnist5k-valid")`` is mnist5k seen for model selection: its ``train`` is the training split less
the validation images and its ``test`` is the validation split, so anything that benchmarks a data set (``robrep
bench``, ``robrep sweep``) can choose on it without the test split ever being read. The name carries the suffix
into every row, run and probe, so validation numbers are never mixed with test numbers.

A data set factory that takes ``split="valid"`` makes its own (colormnist5k carves digits, not coloured copies of
one digit; CelebA uses its partition 1); any other gets ``carve``: a stratified eighth of the training split on its
first task, fixed by ``VALID_SEED`` (mnist5k: 3,500 train / 500 validation, 50 per digit).
"""
from __future__ import annotations

import inspect

import numpy as np
import torch

from robrep.data.base import Dataset, DatasetError, Split

SUFFIX = "-valid"
FRACTION = 1 / 8  # of the training split, per class
VALID_SEED = 1  # the test splits are drawn with seed 0


def stratified_split(y: np.ndarray, n_per_class, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, taken): ``n_per_class`` of every class taken (an int, or a function of the class's size),
    the rest kept; fixed by ``seed``, both sorted."""
    rng = np.random.default_rng(seed)
    kept, taken = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n = n_per_class(len(idx)) if callable(n_per_class) else n_per_class
        taken.append(idx[:n])
        kept.append(idx[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(taken))


def carve(split: Split, task: str, seed: int = VALID_SEED) -> tuple[Split, Split]:
    """(train, valid): ``FRACTION`` of every class of ``task`` (rounded, at least one of a class with two or more)
    held out of ``split``."""
    y = split.labels[task].numpy()
    kept, taken = stratified_split(y, lambda n: max(int(round(n * FRACTION)), 1 if n > 1 else 0), seed)
    return split.subset(torch.from_numpy(kept)), split.subset(torch.from_numpy(taken))


def parse(name: str) -> tuple[str, str]:
    """``("mnist5k", "valid")`` for ``"mnist5k-valid"``, ``(name, "test")`` otherwise."""
    if name.endswith(SUFFIX) and len(name) > len(SUFFIX):
        return name[: -len(SUFFIX)], "valid"
    return name, "test"


def takes_split(factory) -> bool:
    try:
        return "split" in inspect.signature(factory).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False


def validation_view(factory, base: str, **kwargs) -> Dataset:
    """The data set ``base`` for model selection (see the module docstring)."""
    if takes_split(factory):
        ds = factory(split="valid", **kwargs)
    else:
        full = factory(**kwargs)
        if not full.tasks:
            raise DatasetError(f"data set {base!r} has no tasks to stratify a validation split on")
        train, valid = carve(full.train, full.tasks[0].name)
        ds = Dataset(full.name, train, valid, full.tasks)
    if not len(ds.test) or not len(ds.train):
        raise DatasetError(f"data set {base!r} is too small for a validation split: "
                           f"{len(ds.train)} train / {len(ds.test)} validation images")
    ds.name = base + SUFFIX
    return ds
