"""CelebA from a local folder in the standard layout, centre-cropped and resized (64 x 64).

A CelebA root holds::

    img_align_celeba/000001.jpg ...   202,599 aligned faces, 178 x 218
    list_attr_celeba.txt              line 1: count; line 2: the 40 attribute names;
                                      then "000001.jpg -1  1 ..." (40 values in {-1, 1})
    list_eval_partition.txt           "000001.jpg 0" with 0 | 1 | 2 = train | valid | test

either directly or under ``root/celeba/`` (torchvision's layout). Decoding ~200k JPEGs takes
minutes, so the decoded uint8 images of each split are cached once as ``.npy`` under
``cache_dir()/celeba/``, keyed by the source files' names, sizes and mtimes: decoded in parallel processes
(``ROBREP_DECODE_WORKERS``, default the usable cores), written to a temporary file and renamed, and
memory-mapped when loaded, so a split costs memory only for the images a run touches.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robrep.data.base import Dataset, DatasetError, Split, Task, cache_dir, data_root
from robrep.registry import DATASETS

log = logging.getLogger(__name__)

# The 40 attributes, in the order of list_attr_celeba.txt.
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings",
    "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# The paper's list of 17 was not published; this is robrep's choice.
DEFAULT_TASKS = (
    "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Goatee",
    "Gray_Hair", "Heavy_Makeup", "Male", "Mouth_Slightly_Open", "Mustache", "No_Beard",
    "Smiling", "Wearing_Hat", "Wearing_Lipstick", "Young",
)
IMAGES, ATTR_FILE, PARTITION_FILE = "img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"
LAYOUT = (
    f"a CelebA folder holding {IMAGES}/ (000001.jpg ... 202599.jpg, 178 x 218), {ATTR_FILE} and "
    f"{PARTITION_FILE}, either directly or in a celeba/ subfolder"
)
HOW_TO_GET = (
    "CelebA must be downloaded by hand (Google Drive's download quota defeats automatic "
    "downloads): get img_align_celeba.zip, list_attr_celeba.txt and list_eval_partition.txt "
    "from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, unzip the images next to the two "
    "lists and pass that folder as root (or set $ROBREP_DATA to its parent, the folder "
    "being named celeba)"
)
_PARTITIONS = {"train": 0, "valid": 1, "test": 2}


def _find_root(root: Path, download: bool) -> Path:
    """``root`` itself, or ``root/celeba`` when that is where the files are."""
    if not (root / ATTR_FILE).exists() and (root / "celeba").is_dir():
        root = root / "celeba"
    missing = [n for n in (IMAGES, ATTR_FILE, PARTITION_FILE) if not (root / n).exists()]
    if download and missing:
        raise DatasetError(f"cannot download CelebA into {root}. {HOW_TO_GET}.")
    if not root.is_dir():
        raise DatasetError(f"CelebA folder {root} does not exist; expected {LAYOUT}. {HOW_TO_GET}.")
    if missing:
        raise DatasetError(
            f"CelebA folder {root} lacks {', '.join(missing)}; expected {LAYOUT}. {HOW_TO_GET}."
        )
    return root


def _read_attributes(path: Path) -> tuple[list[str], dict[str, int], np.ndarray]:
    """Header names, file -> row, and (N, 40) bool: attribute present (value 1, else -1)."""
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise DatasetError(f"{path}: line 1 must be the image count, line 2 the 40 attribute names")
    names = lines[1].split()
    if sorted(names) != sorted(ATTRIBUTES):
        raise DatasetError(
            f"{path}: line 2 must name the 40 CelebA attributes ({' '.join(ATTRIBUTES)}), "
            f"found {len(names)} names: {' '.join(names)}"
        )
    rows = [line.split() for line in lines[2:] if line.strip()]
    if int(lines[0]) != len(rows):
        raise DatasetError(f"{path}: line 1 says {int(lines[0])} images but {len(rows)} rows follow")
    seen: set[str] = set()  # all distinct values; cheaper than checking 8M tokens one by one
    for i, r in enumerate(rows):
        if len(r) != 41:
            raise DatasetError(
                f"{path}, line {i + 3}: expected a file name and 40 values, got {len(r) - 1} values"
            )
        seen.update(r[1:])
    if seen - {"1", "-1"}:
        i = next(i for i, r in enumerate(rows) if not set(r[1:]) <= {"1", "-1"})
        raise DatasetError(
            f"{path}, line {i + 3} ({rows[i][0]}): values must be -1 or 1, got {' '.join(rows[i][1:])}"
        )
    yes = np.array([[v == "1" for v in r[1:]] for r in rows], dtype=bool).reshape(len(rows), 40)
    return names, {r[0]: i for i, r in enumerate(rows)}, yes


def _read_partition(path: Path, known: dict[str, int]) -> list[tuple[str, int]]:
    out = []
    for i, line in enumerate(path.read_text(errors="replace").splitlines()):
        if not line.strip():
            continue
        r = line.split()
        if len(r) != 2 or r[1] not in ("0", "1", "2"):
            raise DatasetError(
                f"{path}, line {i + 1}: expected 'file.jpg 0|1|2' (train|valid|test), got {line!r}"
            )
        if r[0] not in known:
            raise DatasetError(f"{path}, line {i + 1}: {r[0]} is not in {ATTR_FILE}")
        out.append((r[0], int(r[1])))
    return out


def _decode(path: Path, crop: int, size: int) -> np.ndarray:
    """One image as uint8 (3, size, size): centre crop ``crop`` x ``crop``, bilinear resize."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot decode CelebA image {path}: {e}") from e
    w, h = im.size
    if w < crop or h < crop:
        raise DatasetError(f"CelebA image {path} is {w} x {h}, smaller than the {crop} x {crop} crop")
    left, top = round((w - crop) / 2), round((h - crop) / 2)  # as torchvision's CenterCrop
    im = im.crop((left, top, left + crop, top + crop)).resize((size, size), Image.BILINEAR)
    return np.asarray(im).transpose(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def decode_workers() -> int:
    """Processes that decode CelebA: $ROBREP_DECODE_WORKERS, else the cores this process may use."""
    env = os.environ.get("ROBREP_DECODE_WORKERS")
    if env:
        if not env.isdigit() or int(env) < 1:
            raise DatasetError(f"ROBREP_DECODE_WORKERS must be a whole number >= 1, got {env!r}")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _decode_into(out: str, folder: str, files: list[str], start: int, crop: int, size: int) -> int:
    """Decode ``files`` into rows ``start:`` of the .npy at ``out`` (memory-mapped; one worker's share)."""
    x = np.load(out, mmap_mode="r+")
    for i, f in enumerate(files):
        x[start + i] = _decode(Path(folder) / f, crop, size)
    x.flush()
    return len(files)


def _die_with(parent: int) -> None:
    """A decode worker's initialiser: end with the process that started it. A worker that outlives a killed
    decode (SIGKILL reaches only the one process) would keep writing into a temporary file the next decode
    deletes, and keep the killed job's output pipes open. Linux: PR_SET_PDEATHSIG; elsewhere nothing."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: no parent-death signal
        return
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def _remove_stale(path: Path) -> None:
    """Delete temporary files an earlier, killed decode of ``path`` left. Called under the entry's lock, which
    only a decoding process holds, so any temporary file of the entry is a dead decode's."""
    for tmp in path.parent.glob(f"{path.stem}.*.npy.tmp"):
        log.info("removing %s, left by an interrupted decode", tmp)
        tmp.unlink(missing_ok=True)


def _images(folder: Path, files: list[str], crop: int, size: int, workers: int | None = None) -> np.ndarray:
    """uint8 (N, 3, size, size) of ``files``: decoded once (in ``workers`` processes) into a cache file that
    later calls memory-map (copy-on-write: nothing is read until used, and the file is never modified)."""
    h = hashlib.sha256(f"celeba crop={crop} size={size}".encode())
    for f in files:  # the stat also finds missing images before any decoding
        try:
            st = (folder / f).stat()
        except FileNotFoundError:
            raise DatasetError(
                f"CelebA image {folder / f} is listed in {PARTITION_FILE} but missing"
            ) from None
        h.update(f"\n{f} {st.st_size} {st.st_mtime_ns}".encode())
    path = cache_dir() / "celeba" / f"{h.hexdigest()}.npy"
    shape = (len(files), 3, size, size)
    cached = _load_cached(path, shape)
    if cached is not None:
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    # One decoder per cache entry: the ranks of a torchrun launch (or two runs) that miss the cache together
    # wait for the first one's decode instead of each decoding it. flock is released when its holder dies.
    with open(path.parent / f"{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _load_cached(path, shape)
        if cached is not None:
            return cached
        return _decode_to_cache(path, folder, files, crop, size, shape, workers)


def _load_cached(path: Path, shape: tuple) -> np.ndarray | None:
    if path.exists():
        try:
            x = np.load(path, mmap_mode="c", allow_pickle=False)
            if x.shape == shape and x.dtype == np.uint8:
                return x
            log.warning("ignoring CelebA cache %s: shape %s, expected %s", path, x.shape, shape)
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable CelebA cache %s: %s", path, e)
    return None


def _decode_to_cache(path: Path, folder: Path, files: list[str], crop: int, size: int, shape: tuple,
                     workers: int | None) -> np.ndarray:
    _remove_stale(path)
    if workers is None:  # by default a process only for every 1,000 images: starting one costs more than that
        workers = decode_workers() if os.environ.get("ROBREP_DECODE_WORKERS") else min(
            decode_workers(), max(1, len(files) // 1000))
    workers = max(1, min(workers, len(files)))
    log.info("decoding %d CelebA images into %s (%d process%s)", len(files), path, workers,
             "" if workers == 1 else "es")
    # Decode into a temporary file named after this process, then rename: an interrupted decode (even a killed
    # one, whose file the next decode removes) or a parallel reader never sees half a cache.
    tmp = path.parent / f"{path.stem}.{os.getpid()}.npy.tmp"
    try:
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
        _decode_parallel(tmp, folder, files, crop, size, workers)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return np.load(path, mmap_mode="c", allow_pickle=False)


def _decode_parallel(tmp: Path, folder: Path, files: list[str], crop: int, size: int, workers: int) -> None:
    """Decode ``files`` into ``tmp`` in chunks, logging progress: in this process when ``workers`` is 1, else in
    a pool of ``workers`` processes."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(2000, -(-len(files) // (4 * workers))))  # images per task: balances the workers, logs progress
    done = 0
    if workers == 1:
        for i in range(0, len(files), chunk):
            done += _decode_into(str(tmp), str(folder), files[i:i + chunk], i, crop, size)
            log.info("decoded %d / %d", done, len(files))
        return
    # fork: the workers need only numpy and PIL, and start without importing anything again
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_die_with, initargs=(os.getpid(),)) as pool:
        jobs = [pool.submit(_decode_into, str(tmp), str(folder), files[i:i + chunk], i, crop, size)
                for i in range(0, len(files), chunk)]
        try:
            for job in jobs:
                done += job.result()
                log.info("decoded %d / %d", done, len(files))
        except BaseException:
            for job in jobs:
                job.cancel()
            raise


@DATASETS.register("celeba")
def celeba(
    root=None,
    download: bool = False,
    *,
    tasks: str | list[str] | tuple[str, ...] | None = None,
    size: int = 64,
    crop: int = 148,
    max_images: int | None = None,
    test_split: str = "test",
    split: str | None = None,
) -> Dataset:
    """CelebA as uint8 (N, 3, size, size); one binary task (0 = no, 1 = yes) per attribute.

    tasks: None for the 17 of ``DEFAULT_TASKS``, "all" for all 40, or a list of names.
    max_images: keep only the first N images of each split (quick runs).
    test_split: "test" (partition 2) or "valid" (partition 1). Training uses partition 0.
    split: the same as test_split (how ``load_dataset("celeba-valid")`` asks for partition 1, robrep.data.splits).
    """
    if split is not None:
        test_split = split
    names = DEFAULT_TASKS if tasks is None else ATTRIBUTES if tasks == "all" else (
        (tasks,) if isinstance(tasks, str) else tuple(tasks))
    unknown = [t for t in names if t not in ATTRIBUTES]
    if unknown:
        raise DatasetError(f"unknown CelebA attribute(s) {', '.join(map(repr, unknown))}; "
                           f"the 40 available are: {', '.join(ATTRIBUTES)}")
    if test_split not in ("test", "valid"):
        raise DatasetError(f"test_split must be 'test' or 'valid', got {test_split!r}")
    root = _find_root(data_root(root, "celeba"), download)
    header, row_of, yes = _read_attributes(root / ATTR_FILE)
    listing = _read_partition(root / PARTITION_FILE, row_of)
    folder = root / IMAGES
    if (folder / IMAGES).is_dir():  # the Kaggle copy nests img_align_celeba/img_align_celeba/
        folder = folder / IMAGES

    def split(part: int) -> Split:
        files = [f for f, p in listing if p == part][:max_images]
        rows = yes[[row_of[f] for f in files]]  # (N, 40)
        labels = {t: torch.from_numpy(rows[:, header.index(t)].astype(np.int64)) for t in names}
        return Split(torch.from_numpy(_images(folder, files, crop, size)), labels)

    return Dataset(
        "celeba",
        train=split(_PARTITIONS["train"]),
        test=split(_PARTITIONS[test_split]),
        tasks=tuple(Task(t, 2, ("no", "yes")) for t in names),
    )
