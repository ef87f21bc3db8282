"""CIFAR-10 from a folder in the official binary layout: read exactly, refused clearly, benchmarked end to end."""
import numpy as np
import pytest
import torch

import robrep
from robrep.data import DatasetError, load_dataset
from tests.fixtures import make_cifar10


def test_the_binary_batches_read_back_exactly(tmp_path):
    root = make_cifar10(tmp_path, per_batch=5)
    ds = load_dataset("cifar10", root=root)
    assert ds.train.images.shape == (25, 3, 32, 32) and ds.test.images.shape == (5, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and ds.tasks[0].class_names[-1] == "truck"
    raw = np.fromfile(root / "cifar-10-batches-bin" / "data_batch_2.bin", dtype=np.uint8).reshape(-1, 3073)
    first = raw[0]  # data_batch_2's first record is the sixth training image
    assert int(ds.train.labels["class"][5]) == first[0]
    assert torch.equal(ds.train.images[5, 0], torch.from_numpy(first[1:1025].reshape(32, 32)))  # red plane first
    assert torch.equal(ds.train.images[5, 2], torch.from_numpy(first[2049:].reshape(32, 32)))
    assert load_dataset("cifar10", root=root / "cifar-10-batches-bin").test.images.shape[0] == 5  # the folder itself


def test_a_damaged_or_pickled_or_missing_download_is_refused_with_what_was_expected(tmp_path):
    root = make_cifar10(tmp_path / "a", per_batch=3)
    batch = root / "cifar-10-batches-bin" / "test_batch.bin"
    batch.write_bytes(batch.read_bytes()[:-10])
    with pytest.raises(DatasetError, match="not a whole number of 3,073-byte records"):
        load_dataset("cifar10", root=root)
    pickled = tmp_path / "b" / "cifar-10-batches-py"
    pickled.mkdir(parents=True)
    (pickled / "test_batch").write_bytes(b"\x80\x04")
    with pytest.raises(DatasetError, match="never unpickles"):
        load_dataset("cifar10", root=tmp_path / "b")
    (root / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    batch.write_bytes(b"")
    with pytest.raises(DatasetError, match="data_batch_3.bin"):
        load_dataset("cifar10", root=root)
    with pytest.raises(DatasetError, match="does not download"):
        load_dataset("cifar10", root=root, download=True)


def test_a_resnet18_contrastive_encoder_is_benchmarked_on_the_miniature(tmp_path):
    root = make_cifar10(tmp_path / "data", per_batch=16)
    rows = robrep.bench(learners=("simclr",), datasets=("cifar10",), data_root=str(root), arch="resnet18", epochs=1,
                        radii=(0.0, 8 / 255), steps=2, restarts=1, n_examples=16, out=str(tmp_path / "run"))
    assert set(rows["arch"]) == {"resnet18"} and set(rows["radius"]) == {0.0, 8 / 255}
    assert rows["n_examples"].iloc[0] == 16 and set(rows["task"]) == {"class"}


def test_the_adversarial_probe_runs_on_the_miniature_under_the_cifar_radius(tmp_path):
    """The ALF probe on CIFAR-10's radius (a ConvNet here: the ResNet-18's adversarial probe costs minutes on a
    CPU even on the miniature; benchmarks/cifar10_cost.py projects its full cost)."""
    root = make_cifar10(tmp_path / "data", per_batch=8)
    rows = robrep.bench(learners=("simclr",), datasets=("cifar10",), data_root=str(root), arch="conv", epochs=1,
                        radii=(0.0, 8 / 255), steps=2, restarts=1, n_examples=8, probe="adversarial",
                        out=str(tmp_path / "run"))
    assert set(rows["probe"]) == {"adversarial linf 8/255"}
    assert len(list((tmp_path / "run" / "probes").rglob("*-adversarial-linf-8_255.safetensors"))) == 1
