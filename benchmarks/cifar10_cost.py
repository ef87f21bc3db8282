"""What the cifar10-linf protocol would cost at full size, projected from throughput measured here.

    python benchmarks/cifar10_cost.py [--device cpu|cuda] [--json benchmarks/results/cifar10_cost.json]

CIFAR-10 cannot be downloaded here; its size and layout can be reproduced exactly. The script

1. writes a full-size CIFAR-10 in the official binary layout (random pixels, real record sizes) to a temporary
   folder and times reading it (``robrep.data.cifar10``);
2. measures ResNet-18 (CIFAR stem) images per second, forward and backward to the input and the weights, at batch
   128, and the same for robrep's MNIST MLP (``--device``);
3. projects each learner's training (its default epochs x the passes a step makes x 50,000 images), the
   adversarial probe (``robrep.probes.ADVERSARIAL``: epochs x (steps + 1) passes x 50,000), and the standard
   protocol's attacks: the seconds per test point that one MLP entry of the published mnist5k-linf board took
   (its rows' own wall seconds), scaled by the ResNet-18 / MLP cost ratio, times 1,000 test points.

Projections, not measurements of the real run: the attacks' share of robust points differs between encoders
(robust points cost the most), and a GPU's ratio between the two networks is not a CPU's.
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
TRAIN = 50_000
POINTS = 1_000
# forward-and-backward passes of the encoder per training image and step, from each learner's loss
PASSES = {"vae": 1, "beta-vae": 1, "beta-tcvae": 1, "ae": 1, "dae": 1, "se-random": 2, "se-adversarial": 3,
          "simclr": 2, "rocl": 2 + 5 + 1, "supervised": 1, "supervised-at": 10 + 1, "random-init": 0}


def write_full_size(folder: Path) -> None:
    from robrep.data.cifar10 import RECORD, TEST_FILE, TRAIN_FILES

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*TRAIN_FILES, TEST_FILE):
        records = rng.integers(0, 256, (10_000, RECORD), dtype=np.uint8)
        records[:, 0] %= 10
        records.tofile(folder / name)


def images_per_second(net, shape, device, batch: int = 128, repeats: int = 5) -> float:
    x = torch.rand(batch, *shape, device=device, requires_grad=True)
    net = net.to(device).train()

    def step():
        mu, _ = net(x)
        mu.square().sum().backward()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - t0)


def mlp_attack_seconds_per_point() -> tuple[float, int]:
    """Median over the published mnist5k-linf entries (MLP, standard probe) of their attack cells' seconds per
    test point, and the number of entries."""
    import pandas as pd

    board = pd.read_csv(REPO / "leaderboard" / "mnist5k-linf.csv")
    board = board[(board["arch"] == "mlp") & (board["suite"] != "worst-case")]
    if "probe" in board:
        board = board[board["probe"].astype(object).fillna("standard") == "standard"]
    cells = board.drop_duplicates(["run", "task", "suite", "attack"])
    per = cells.groupby("run")["wall_seconds"].sum() / cells.groupby("run")["n_examples"].first()
    return float(per.median()), len(per)


def main() -> int:
    from robrep.learners import LEARNERS
    from robrep.nets import build_nets
    from robrep.probes import ADVERSARIAL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cifar-10-batches-bin"
        write_full_size(folder)
        from robrep.data import load_dataset

        t0 = time.perf_counter()
        ds = load_dataset("cifar10", root=tmp)
        read = time.perf_counter() - t0
    print(f"read the full-size binary batches: {read:.1f} s ({ds.train.images.shape[0]:,} + {ds.test.images.shape[0]:,} "
          f"images, {ds.train.images.numel() / 2**20:.0f} MiB of uint8)")
    resnet = images_per_second(build_nets("resnet18", (3, 32, 32), 32)[0], (3, 32, 32), device)
    mlp = images_per_second(build_nets("mlp", (1, 28, 28), 32)[0], (1, 28, 28), device)
    print(f"forward + backward, batch 128 on {device}: ResNet-18 {resnet:,.0f} images/s, MLP {mlp:,.0f} images/s "
          f"({mlp / resnet:,.0f}x)")
    attack_mlp, entries = mlp_attack_seconds_per_point()
    attack = attack_mlp * mlp / resnet * POINTS
    rows = []
    for name, passes in PASSES.items():
        epochs = LEARNERS.get(name).config_class().epochs if passes else 0
        train = epochs * passes * TRAIN / resnet
        rows.append({"learner": name, "epochs": epochs, "passes": passes, "train_hours": train / 3600})
    probe = ADVERSARIAL["epochs"] * (ADVERSARIAL["steps"] + 1) * TRAIN / resnet
    print(f"{'learner':16} {'epochs':>6} {'passes':>6} {'training':>12}")
    for r in rows:
        print(f"{r['learner']:16} {r['epochs']:6d} {r['passes']:6d} {r['train_hours']:10.1f} h")
    print(f"adversarial probe: {probe / 3600:.1f} h per encoder and task")
    print(f"standard protocol's attacks on {POINTS:,} points: {attack / 3600:.1f} h per entry (from {attack_mlp:.2f} s "
          f"per point on the MLP, median of {entries} published mnist5k-linf entries)")
    if args.json:
        args.json.write_text(json.dumps({
            "command": f"python benchmarks/cifar10_cost.py --device {args.device}", "device": str(device),
            "machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "read_seconds": round(read, 1), "resnet18_images_per_second": round(resnet, 1),
            "mlp_images_per_second": round(mlp, 1), "attack_hours": round(attack / 3600, 2),
            "adversarial_probe_hours": round(probe / 3600, 2),
            "rows": [{**r, "train_hours": round(r["train_hours"], 2)} for r in rows]}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
