"""Validation splits (robrep.data.splits): held out of the training split, never overlapping the test split."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fixtures import make_celeba, make_mnist_raw
from robrep.data import DatasetError, Dataset, Split, Task, load_dataset
from robrep.data import splits
from robrep.registry import DATASETS


def _rows(split) -> list[bytes]:
    return [bytes(r) for r in split.images.flatten(1).numpy()]


def test_mnist5k_validation_view_is_3500_500_out_of_the_training_split(mnist5k):
    v = load_dataset("mnist5k-valid")
    assert v.name == "mnist5k-valid" and v.tasks == mnist5k.tasks
    assert len(v.train) == 3500 and len(v.test) == 500
    assert torch.bincount(v.test.labels["digit"]).tolist() == [50] * 10
    train, test = set(_rows(mnist5k.train)), set(_rows(mnist5k.test))
    rows_v, rows_t = _rows(v.test), _rows(v.train)
    assert all(r in train for r in rows_v + rows_t)  # both from the training split ...
    assert not any(r in test for r in rows_v + rows_t)  # ... none from the test split
    assert not set(rows_v) & set(rows_t) and len(set(rows_v) | set(rows_t)) == len(train)
    # labels travel with their images, and the view is fixed
    key = {r: int(label) for r, label in zip(_rows(mnist5k.train), mnist5k.train.labels["digit"])}
    assert [key[r] for r in rows_v] == v.test.labels["digit"].tolist()
    assert torch.equal(load_dataset("mnist5k-valid").test.images, v.test.images)
    assert torch.equal(load_dataset("mnist5k").test.images, mnist5k.test.images)  # the test split is unchanged


def test_colormnist_validation_holds_out_digits_not_coloured_copies(mnist5k):
    v, base = load_dataset("colormnist5k-valid"), load_dataset("mnist5k-valid")
    assert v.name == "colormnist5k-valid" and len(v.train) == 7 * 3500 and len(v.test) == 7 * 500
    # the shape of a digit (its brightest channel) is in one split only, in all seven colours
    shape = lambda s: {bytes(r) for r in s.images.amax(1).flatten(1).numpy()}  # noqa: E731
    assert not shape(v.train) & shape(v.test)
    assert shape(v.test) == set(_rows(base.test)) and not shape(v.test) & set(_rows(mnist5k.test))


def test_full_mnist_and_celeba_views(tmp_path):
    make_mnist_raw(tmp_path / "m", n_train=80, n_test=20)
    m = load_dataset("mnist-valid", root=tmp_path / "m")
    assert m.name == "mnist-valid" and len(m.train) + len(m.test) == 80 and 0 < len(m.test) < 20
    root = make_celeba(tmp_path / "c", n=30)
    c = load_dataset("celeba-valid", root=root)
    parts = [line.split() for line in (root / "list_eval_partition.txt").read_text().splitlines()]
    assert c.name == "celeba-valid"
    assert len(c.train) == sum(p == "0" for _, p in parts) and len(c.test) == sum(p == "1" for _, p in parts)


def test_a_plugin_data_set_gets_a_stratified_eighth(monkeypatch):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (160, 1, 4, 4), dtype=torch.uint8, generator=g)
    labels = torch.arange(160) % 4

    def toy(root=None, download=False):
        return Dataset("toy", Split(images, {"k": labels}), Split(images[:8], {"k": labels[:8]}), (Task("k", 4),))

    monkeypatch.setitem(DATASETS._entries, "toy", toy)
    monkeypatch.setitem(DATASETS._origin, "toy", "test")
    v = load_dataset("toy-valid")
    assert len(v.test) == 20 and torch.bincount(v.test.labels["k"]).tolist() == [5] * 4 and len(v.train) == 140
    assert not set(_rows(v.train)) & set(_rows(v.test))


def test_bad_names_say_what_exists():
    with pytest.raises(DatasetError, match="'nope-valid'.*mnist5k.*NAME-valid"):
        load_dataset("nope-valid")
    assert splits.parse("mnist5k-valid") == ("mnist5k", "valid") and splits.parse("-valid") == ("-valid", "test")
    with pytest.raises(DatasetError, match="split must be 'test' or 'valid'"):
        DATASETS.get("colormnist5k")(split="train")
