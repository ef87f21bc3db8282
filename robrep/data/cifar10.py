"""CIFAR-10 (Krizhevsky 2009) from a user's folder, in its official binary layout (no pickle is ever loaded)::

    <root>/cifar-10-batches-bin/data_batch_1.bin ... data_batch_5.bin   10,000 records each (training)
    <root>/cifar-10-batches-bin/test_batch.bin                          10,000 records (test)
    <root>/cifar-10-batches-bin/batches.meta.txt                        the 10 class names, one per line

as ``cifar-10-binary.tar.gz`` unpacks (``root`` may also be that folder itself). Each record is 3,073 bytes: the
label (0-9), then the 32 x 32 image as 1,024 red, 1,024 green and 1,024 blue bytes, rows first. A file whose size
is not a whole number of records, or a label above 9, is refused with the file named. The Python version of the
data set (``cifar-10-batches-py``, pickled) is refused too: unpickling runs code from the file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robrep.data.base import Dataset, DatasetError, Split, Task, data_root
from robrep.registry import DATASETS

RECORD = 1 + 3 * 32 * 32
TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
TEST_FILE = "test_batch.bin"
FOLDER = "cifar-10-batches-bin"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _folder(root: Path) -> Path:
    for candidate in (root / FOLDER, root, root / "cifar10" / FOLDER):
        if (candidate / TEST_FILE).is_file():
            return candidate
    pickled = next((p for p in (root / "cifar-10-batches-py", root) if (p / "test_batch").is_file()), None)
    hint = (f" ({pickled} holds the pickled Python version: robrep reads the binary version, "
            "cifar-10-binary.tar.gz, and never unpickles a file)" if pickled else "")
    raise DatasetError(f"no CIFAR-10 under {root}{hint}: expected {root}/{FOLDER}/ holding "
                       f"{', '.join(TRAIN_FILES)}, {TEST_FILE} and batches.meta.txt (the official binary version)")


def read_batches(paths: list[Path]) -> Split:
    """The records of the binary batch files ``paths``, in order: uint8 (N, 3, 32, 32) images and their labels."""
    chunks = []
    for path in paths:
        try:
            raw = np.fromfile(path, dtype=np.uint8)
        except OSError as e:
            raise DatasetError(f"cannot read CIFAR-10 batch {path}: {e}") from e
        if raw.size == 0 or raw.size % RECORD:
            raise DatasetError(f"{path} holds {raw.size:,} bytes, not a whole number of {RECORD:,}-byte records (a "
                               "truncated or damaged download?)")
        chunks.append(raw.reshape(-1, RECORD))
    records = np.concatenate(chunks)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DatasetError(f"CIFAR-10 labels are 0..9, found {labels.max()} in {', '.join(map(str, paths))}")
    images = torch.from_numpy(np.ascontiguousarray(records[:, 1:])).reshape(-1, 3, 32, 32)
    return Split(images, {"class": torch.from_numpy(labels)})


def class_names(folder: Path) -> tuple[str, ...]:
    """The names in batches.meta.txt (blank lines dropped), or the published ten where the file is missing."""
    meta = folder / "batches.meta.txt"
    if not meta.is_file():
        return CLASSES
    names = tuple(line.strip() for line in meta.read_text(encoding="ascii", errors="replace").splitlines() if line.strip())
    if len(names) != 10:
        raise DatasetError(f"{meta} names {len(names)} classes, expected 10")
    return names


@DATASETS.register("cifar10")
def cifar10(root=None, download: bool = False) -> Dataset:
    """CIFAR-10 (50,000 / 10,000 colour images, 32 x 32, 10 classes) from a folder in the official binary layout:
    ``<root>/cifar-10-batches-bin/*.bin``. Nothing is downloaded."""
    if download:
        raise DatasetError("robrep does not download CIFAR-10: unpack cifar-10-binary.tar.gz from "
                           "https://www.cs.toronto.edu/~kriz/cifar.html into the folder given as --data-root")
    folder = _folder(data_root(root, "cifar10"))
    missing = [name for name in TRAIN_FILES if not (folder / name).is_file()]
    if missing:
        raise DatasetError(f"{folder} lacks {', '.join(missing)} (the official binary version has five training "
                           f"batches and {TEST_FILE})")
    train = read_batches([folder / name for name in TRAIN_FILES])
    test = read_batches([folder / TEST_FILE])
    return Dataset("cifar10", train, test, (Task("class", 10, class_names(folder)),))
