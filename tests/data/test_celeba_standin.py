"""The full-size CelebA stand-in (robrep.data.celeba_standin), written small: the real layout, the real
partition proportions, and attributes that are drawn, so a probe can learn them."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from robrep.data import load_dataset
from robrep.data import celeba as C
from robrep.data.celeba_standin import DRAWN, FREQUENCY, partition_sizes, sample_attributes, write_standin


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBREP_CACHE", str(tmp_path / "cache"))


def test_partition_sizes_are_celebas():
    assert partition_sizes(202_599) == (162_770, 19_867, 19_962)
    train, valid, test = partition_sizes(20_000)
    assert train + valid + test == 20_000 and abs(train / 20_000 - 0.8034) < 0.001
    with pytest.raises(ValueError, match="at least 3"):
        partition_sizes(2)


def test_attributes_follow_celebas_frequencies_and_exclusions():
    a = sample_attributes(20_000, seed=0)
    col = {name: a[:, i] for i, name in enumerate(C.ATTRIBUTES)}
    for name in ("Male", "Smiling", "Eyeglasses", "Young"):
        assert abs(col[name].mean() - FREQUENCY[name]) < 0.02, name
    hair = sum(col[h].astype(int) for h in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"))
    assert hair.max() == 1 and not (col["Bald"] & (hair > 0)).any()
    assert not (col["Goatee"] & col["No_Beard"]).any() and not (col["Heavy_Makeup"] & col["Male"]).any()
    assert np.array_equal(a, sample_attributes(20_000, seed=0))


def test_written_standin_reads_as_celeba_and_is_the_same_whatever_the_workers(tmp_path):
    one = write_standin(tmp_path / "one", 40, workers=1)
    two = write_standin(tmp_path / "two", 40, workers=2)
    for f in ("list_attr_celeba.txt", "list_eval_partition.txt", "img_align_celeba/000017.jpg"):
        assert (one / f).read_bytes() == (two / f).read_bytes()
    ds = load_dataset("celeba", root=one, tasks="all")
    train, valid, test = partition_sizes(40)
    assert (len(ds.train), len(ds.test)) == (train, test) and ds.shape == (3, 64, 64)
    lines = (one / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "40" and lines[1].split() == list(C.ATTRIBUTES) and len(lines) == 42
    with pytest.raises(ValueError, match="6 digits"):
        write_standin(tmp_path / "big", 1_000_000)


@pytest.mark.slow
def test_drawn_attributes_are_learnable_and_undrawn_ones_are_not(tmp_path):
    """A class-balanced linear probe on 16 x 16 pixels tells drawn attributes apart, and not the random ones."""
    drawn, undrawn = ["Eyeglasses", "Blond_Hair", "Wearing_Hat", "Smiling", "Male"], ["Attractive", "Oval_Face"]
    assert set(drawn) <= set(DRAWN) and not set(undrawn) & set(DRAWN)
    root = write_standin(tmp_path / "s", 3000)
    ds = load_dataset("celeba", root=root, tasks=drawn + undrawn)

    def pixels(split):
        return torch.nn.functional.avg_pool2d(split.images.float() / 255, 4).flatten(1)

    xtr, xte = pixels(ds.train), pixels(ds.test)
    mean, std = xtr.mean(0), xtr.std(0) + 1e-3
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    balanced = {}
    for task in ds.tasks:
        ytr, yte = ds.train.labels[task.name], ds.test.labels[task.name]
        weight = 0.5 / torch.stack([(ytr == 0).float().mean(), (ytr == 1).float().mean()])
        w = torch.zeros(xtr.shape[1], 2, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=200)

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(xtr @ w, ytr, weight=weight) + 1e-2 * w.pow(2).sum()
            loss.backward()
            return loss
        opt.step(closure)
        pred = (xte @ w).argmax(1)
        balanced[task.name] = 0.5 * sum(((pred == c) & (yte == c)).sum().item() / (yte == c).sum().item()
                                        for c in (0, 1))
    assert all(balanced[t] > 0.62 for t in drawn), balanced  # measured: 0.69 to 0.95
    assert all(balanced[t] < 0.58 for t in undrawn), balanced  # chance: 0.5
