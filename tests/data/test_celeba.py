"""The CelebA reader on a miniature CelebA in the real layout (tests/fixtures.py)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from fixtures import CELEBA_ATTRIBUTES, make_celeba
from robrep.data import DatasetError, load_dataset
from robrep.data import celeba as C


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Never touch the user's cache or data folders."""
    monkeypatch.setenv("ROBREP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ROBREP_DATA", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def root(tmp_path):
    return make_celeba(tmp_path / "data")


def read_lists(root):
    lines = (root / "list_attr_celeba.txt").read_text().splitlines()
    names = lines[1].split()
    attrs = {r.split()[0]: dict(zip(names, map(int, r.split()[1:]))) for r in lines[2:]}
    parts = [line.split() for line in (root / "list_eval_partition.txt").read_text().splitlines()]
    return attrs, parts


def test_attributes_constant_matches_real_order():
    assert list(C.ATTRIBUTES) == CELEBA_ATTRIBUTES and len(set(CELEBA_ATTRIBUTES)) == 40
    assert len(C.DEFAULT_TASKS) == 17 and set(C.DEFAULT_TASKS) <= set(C.ATTRIBUTES)


def test_reads_fixture(root):
    ds = load_dataset("celeba", root=root)
    attrs, parts = read_lists(root)
    train = [f for f, p in parts if p == "0"]
    test = [f for f, p in parts if p == "2"]
    assert ds.name == "celeba" and ds.shape == (3, 64, 64)
    assert ds.train.images.shape == (len(train), 3, 64, 64) and ds.train.images.dtype == torch.uint8
    assert len(ds.test) == len(test) >= 3
    assert [t.name for t in ds.tasks] == list(C.DEFAULT_TASKS)
    assert ds.task("Smiling").n_classes == 2 and ds.task("Smiling").class_names == ("no", "yes")
    for task in ("Male", "Smiling", "Young"):
        assert ds.train.labels[task].dtype == torch.int64
        assert ds.train.labels[task].tolist() == [int(attrs[f][task] == 1) for f in train]
        assert ds.test.labels[task].tolist() == [int(attrs[f][task] == 1) for f in test]

    # pixels: a direct PIL centre crop (15, 35) of 148 x 148, then bilinear resize to 64
    with Image.open(root / "img_align_celeba" / test[1]) as im:
        ref = np.asarray(im.convert("RGB").crop((15, 35, 163, 183)).resize((64, 64), Image.BILINEAR))
    assert torch.equal(ds.test.images[1], torch.from_numpy(ref.transpose(2, 0, 1).copy()))


def test_task_selection_and_options(root):
    assert len(C.celeba(root, tasks="all").tasks) == 40
    ds = C.celeba(root, tasks=["Bald", "5_o_Clock_Shadow"], size=32, max_images=5, test_split="valid")
    assert [t.name for t in ds.tasks] == ["Bald", "5_o_Clock_Shadow"]
    assert ds.train.images.shape == (5, 3, 32, 32)
    _, parts = read_lists(root)
    assert len(ds.test) == min(5, sum(p == "1" for _, p in parts))
    with pytest.raises(DatasetError, match="unknown CelebA attribute.*'Beard'.*Wearing_Necktie"):
        C.celeba(root, tasks=["Smiling", "Beard"])


def test_cache_is_reused_and_invalidated(root, _cache, monkeypatch):
    first = C.celeba(root)
    cached = sorted((_cache / "celeba").glob("*.npy"))
    assert len(cached) == 2  # one per split
    assert not list((_cache / "celeba").glob("*.tmp"))

    def no_decoding(*args):
        raise AssertionError("decoded although cached")

    with monkeypatch.context() as m:
        m.setattr(C, "_decode", no_decoding)
        second = C.celeba(root)
    assert torch.equal(first.train.images, second.train.images)

    # rewriting one training image gives a new cache key, so it is decoded again
    img = root / "img_align_celeba" / "000001.jpg"
    Image.new("RGB", (178, 218), (255, 0, 0)).save(img, quality=90)
    os.utime(img, ns=(1, 1))  # a distinct mtime even on coarse-clock filesystems
    third = C.celeba(root)
    assert len(list((_cache / "celeba").glob("*.npy"))) == 3
    assert third.train.images[0, 0].float().mean() > 240  # red
    assert torch.equal(third.train.images[1:], first.train.images[1:])


def test_torchvision_subfolder_layout(tmp_path):
    make_celeba(tmp_path / "torchvision" / "celeba", n=8)
    assert len(C.celeba(tmp_path / "torchvision").test) == 3


def test_root_from_robrep_data(tmp_path, monkeypatch):
    make_celeba(tmp_path / "datasets" / "celeba", n=8)
    monkeypatch.setenv("ROBREP_DATA", str(tmp_path / "datasets"))
    assert len(C.celeba().test) == 3


@pytest.mark.parametrize(
    "breakage, match",
    [
        ("no_root", "does not exist.*img_align_celeba.*list_attr_celeba.txt.*downloaded by hand"),
        ("no_attr", "lacks list_attr_celeba.txt"),
        ("no_images", "lacks img_align_celeba"),
        ("count", "line 1 says 9 images but 8 rows follow"),
        ("header", "line 2 must name the 40 CelebA attributes"),
        ("short_row", r"line 5: expected a file name and 40 values, got 39"),
        ("bad_value", r"line 4 \(000002.jpg\): values must be -1 or 1"),
        ("bad_partition", "expected 'file.jpg 0\\|1\\|2'"),
        ("unknown_file", "000099.jpg is not in list_attr_celeba.txt"),
        ("missing_image", "000003.jpg is listed in list_eval_partition.txt but missing"),
        ("truncated", "cannot decode CelebA image .*000002.jpg"),
        ("not_jpeg", "cannot decode CelebA image .*000004.jpg"),
    ],
)
def test_broken_folders(tmp_path, breakage, match):
    root = make_celeba(tmp_path / "celeba", n=8)
    attr, part = root / "list_attr_celeba.txt", root / "list_eval_partition.txt"
    images = root / "img_align_celeba"
    lines = attr.read_text().splitlines(keepends=True)
    if breakage == "no_root":
        root = tmp_path / "nowhere"
    elif breakage == "no_attr":
        attr.unlink()
    elif breakage == "no_images":
        for f in images.iterdir():
            f.unlink()
        images.rmdir()
    elif breakage == "count":
        attr.write_text("9\n" + "".join(lines[1:]))
    elif breakage == "header":
        attr.write_text(lines[0] + lines[1].replace("Young", "") + "".join(lines[2:]))
    elif breakage == "short_row":
        lines[4] = " ".join(lines[4].split()[:-1]) + "\n"
        attr.write_text("".join(lines))
    elif breakage == "bad_value":
        row = lines[3]  # 000002.jpg
        lines[3] = row.replace(" 1", " 2", 1) if " 1" in row else row.replace("-1", " 0", 1)
        attr.write_text("".join(lines))
    elif breakage == "bad_partition":
        part.write_text(part.read_text().replace("000002.jpg 0", "000002.jpg 3"))
    elif breakage == "unknown_file":
        part.write_text(part.read_text() + "000099.jpg 2\n")
    elif breakage == "missing_image":
        (images / "000003.jpg").unlink()
    elif breakage == "truncated":
        data = (images / "000002.jpg").read_bytes()
        (images / "000002.jpg").write_bytes(data[: len(data) // 2])
    elif breakage == "not_jpeg":
        (images / "000004.jpg").write_text("<html>Google Drive quota exceeded</html>")
    with pytest.raises(DatasetError, match=match):
        C.celeba(root)


def test_download_explains_manual_steps(tmp_path):
    with pytest.raises(DatasetError, match="downloaded by hand.*list_eval_partition.txt"):
        C.celeba(tmp_path / "empty", download=True)
    # with the files in place, download=True just loads them
    assert len(C.celeba(make_celeba(tmp_path / "celeba", n=8), download=True).train) > 0


def test_parallel_decode_gives_the_same_bytes_and_reloads_memory_mapped(root, _cache, monkeypatch):
    monkeypatch.setenv("ROBREP_DECODE_WORKERS", "1")
    one = load_dataset("celeba", root=root)
    single = {s: getattr(one, s).images.clone() for s in ("train", "test")}
    for f in (_cache / "celeba").glob("*.npy"):
        f.unlink()
    monkeypatch.setenv("ROBREP_DECODE_WORKERS", "3")  # 3 processes on the miniature's few images
    pools = []
    real = C._decode_parallel
    monkeypatch.setattr(C, "_decode_parallel", lambda *a: pools.append(a[-1]) or real(*a))
    par = load_dataset("celeba", root=root)
    assert pools == [3, 3]  # train and test, each decoded by a pool of 3 worker processes
    for s in ("train", "test"):
        assert torch.equal(getattr(par, s).images, single[s])
    again = load_dataset("celeba", root=root)  # from the cache: memory-mapped, never written back
    arr = C._images(root / "img_align_celeba", [f"{i:06d}.jpg" for i in range(1, 4)], 148, 64)
    assert isinstance(arr, np.memmap) and arr.mode == "c"
    again.train.images[0].zero_()  # copy-on-write: the cache file is untouched
    assert torch.equal(load_dataset("celeba", root=root).train.images, single["train"])
    assert not list((_cache / "celeba").glob("*.tmp"))


def test_an_interrupted_decode_leaves_no_cache_and_its_leftovers_are_removed(root, _cache, monkeypatch):
    monkeypatch.setenv("ROBREP_DECODE_WORKERS", "2")
    victim = sorted((root / "img_align_celeba").glob("*.jpg"))[5]
    good = victim.read_bytes()
    victim.write_bytes(good[:200])  # a truncated JPEG: a worker fails half way through the split
    with pytest.raises(DatasetError, match="cannot decode"):
        load_dataset("celeba", root=root)
    assert not list((_cache / "celeba").glob("*.npy")) and not list((_cache / "celeba").glob("*.tmp"))
    # a decode killed outright leaves its temporary file; the next decode of that cache entry removes it
    victim.write_bytes(good)
    load_dataset("celeba", root=root)
    entry = sorted((_cache / "celeba").glob("*.npy"))[0]
    for f in (_cache / "celeba").glob("*.npy"):
        f.unlink()
    dead = _cache / "celeba" / f"{entry.stem}.999999999.npy.tmp"  # no process has that pid
    dead.write_bytes(b"half a file")
    ds = load_dataset("celeba", root=root)
    assert not dead.exists() and len(list((_cache / "celeba").glob("*.npy"))) == 2
    assert ds.train.images.float().std() > 0


def _children(pid: int) -> set[int]:
    kids = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as fh:
            kids |= {int(k) for k in fh.read().split()}
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children"), reason="Linux /proc")
def test_a_decode_killed_outright_takes_its_workers_along_and_the_next_decode_is_whole(tmp_path, _cache,
                                                                                        monkeypatch):
    """SIGKILL to the decoding process alone (kill -9 PID, an out-of-memory kill): its pool workers end with
    it, nothing half-written is ever loaded, and the next run decodes the same bytes as an uninterrupted one."""
    import signal
    import subprocess
    import sys
    import time

    root = make_celeba(tmp_path / "big", n=400)
    slow = ("import logging, sys, time; logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
            "from robrep.data import celeba as C, load_dataset\n"
            "real = C._decode\n"
            "C._decode = lambda *a: (time.sleep(0.02), real(*a))[1]  # slow enough to be killed half way\n"
            f"load_dataset('celeba', root={str(root)!r})\n")
    env = {**os.environ, "ROBREP_CACHE": str(_cache), "ROBREP_DECODE_WORKERS": "2", "OMP_NUM_THREADS": "1"}
    log_path = tmp_path / "decode.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", slow], env=env, stderr=log, stdout=log)
    try:
        deadline = time.monotonic() + 120
        while "decoded " not in log_path.read_text():  # the pool has started and written a first chunk
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert len(workers) == 2 and list((_cache / "celeba").glob("*.npy.tmp")), log_path.read_text()
        os.kill(proc.pid, signal.SIGKILL)  # the parent only
        proc.wait(10)
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)):
            assert time.monotonic() < deadline, "decode workers outlived their killed parent"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list((_cache / "celeba").glob("*.npy")), "a killed decode left a cache entry"
    leftover = list((_cache / "celeba").glob("*.npy.tmp"))
    assert leftover  # the killed decode's temporary file, which the next decode removes
    monkeypatch.setenv("ROBREP_DECODE_WORKERS", "2")
    again = load_dataset("celeba", root=root)
    assert not list((_cache / "celeba").glob("*.npy.tmp"))
    for f in (_cache / "celeba").glob("*.npy"):
        f.unlink()
    monkeypatch.setenv("ROBREP_DECODE_WORKERS", "1")
    clean = load_dataset("celeba", root=root)
    for s in ("train", "test"):
        assert torch.equal(getattr(again, s).images, getattr(clean, s).images)


def test_decode_workers_rejects_a_bad_setting(monkeypatch):
    monkeypatch.setenv("ROBREP_DECODE_WORKERS", "two")
    with pytest.raises(DatasetError, match="ROBREP_DECODE_WORKERS must be a whole number"):
        C.decode_workers()


@pytest.mark.slow
def test_processes_that_miss_the_cache_together_decode_it_once(tmp_path, _cache):
    import subprocess
    import sys

    root = make_celeba(tmp_path / "big", n=300)
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
            f"from robrep.data import load_dataset; load_dataset('celeba', root={str(root)!r})")
    env = {**os.environ, "ROBREP_CACHE": str(_cache), "ROBREP_DECODE_WORKERS": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    logs = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    assert sum(log.count("decoding ") for log in logs) == 2, logs  # train and test, each by one process
    assert len(list((_cache / "celeba").glob("*.npy"))) == 2
