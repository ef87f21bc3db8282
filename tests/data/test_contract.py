"""Every registered data set keeps the data contract, driven by the registry: a data set added later is tested
here without a new test (folder-backed ones from miniatures in their real on-disk layouts)."""
from __future__ import annotations

import pytest
import torch

from fixtures import make_celeba, make_cifar10, make_mnist_raw
from robrep.data import DATASETS, load_dataset, reads_folder


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    """A folder per folder-backed data set, holding its miniature."""
    base = tmp_path_factory.mktemp("roots")
    return {"mnist": make_mnist_raw(base / "mnist", n_train=120, n_test=40),
            "colormnist": make_mnist_raw(base / "colormnist", n_train=120, n_test=40),
            "celeba": make_celeba(base / "celeba", n=24),
            "cifar10": make_cifar10(base / "cifar10", per_batch=16)}


BUILT_IN = [name for name in DATASETS.list() if DATASETS.origin(name) == "built-in"]


@pytest.mark.parametrize("name", BUILT_IN)
@pytest.mark.parametrize("view", ["", "-valid"])
def test_every_data_set_yields_uint8_images_and_labels_in_range(name, view, roots):
    root = roots.get(name)
    if reads_folder(name):
        assert root is not None, f"{name} reads a folder: give it a miniature in this test"
    ds = load_dataset(name + view, root=root)
    c, h, w = ds.shape
    assert c in (1, 3) and h >= 8 and w >= 8 and ds.tasks
    for split in (ds.train, ds.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (c, h, w) and len(split) > 0
        x = split.batch(slice(0, 4))  # what encoders receive: float32 pixels in [0, 1]
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        for task in ds.tasks:
            y = split.labels[task.name]
            assert y.dtype == torch.int64 and y.shape == (len(split),)
            assert 0 <= int(y.min()) and int(y.max()) < task.n_classes
            assert not task.class_names or len(task.class_names) == task.n_classes
    if view:  # the validation view never shows a test image, in either of its splits
        test = {bytes(img.numpy()) for img in load_dataset(name, root=root).test.images}
        assert not any(bytes(img.numpy()) in test for split in (ds.train, ds.test) for img in split.images)
