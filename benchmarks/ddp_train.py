"""How `torchrun -m robrep train` (DistributedDataParallel) relates to one process, measured.

    python benchmarks/ddp_train.py [--learner vae] [--epochs 10] [--nproc 2]

Trains the learner on mnist5k as one process and on ``--nproc`` processes (one thread each), from
the same seed, then benchmarks both checkpoints with the same attack (native PGD 50 x 2 on 500
test digits), and, as the yardstick of run-to-run noise, one process from another seed. Prints
wall seconds, the last epoch's loss parts, and nominal and adversarial accuracy of each, with the
DDP run's difference from one process next to the other seed's. The two checkpoints are not bit-identical
(each rank draws its own noise and float sums run in another order); this says by how much the
numbers move.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACK = ["--suite", "native", "--steps", "50", "--restarts", "2", "--n-examples", "500", "--radii", "0,0.05,0.1,0.2"]


def _robrep(nproc: int, args: list[str], env: dict) -> float:
    launch = [sys.executable, "-m", "robrep"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "robrep"]
    t0 = time.perf_counter()
    res = subprocess.run([*launch, *args], env=env, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"robrep {' '.join(args)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return time.perf_counter() - t0


def main() -> None:
    from robrep.checkpoint import read_config
    from robrep.rows import read_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learner", default="vae")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--nproc", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBREP_CACHE": str(tmp / "cache")}
        env.pop("WORLD_SIZE", None)
        runs = {"one": (1, 0), "ddp": (args.nproc, 0), "seed1": (1, 1)}
        walls, history, acc = {}, {}, {}
        for name, (n, seed) in runs.items():
            ckpt = tmp / name
            walls[name] = _robrep(n, ["train", "--learner", args.learner, "--epochs", str(args.epochs),
                                      "--seed", str(seed), "--out", str(ckpt)], env)
            history[name] = read_config(ckpt)["history"][-1]
            _robrep(1, ["bench", "--learner", f"{ckpt}", *ATTACK, "--out", str(tmp / f"bench-{name}")], env)
            df = read_results(tmp / f"bench-{name}" / "results.csv")
            acc[name] = dict(zip(df["radius"].astype(float), df["adversarial_accuracy"].astype(float)))
    print(f"{args.learner} on mnist5k, {args.epochs} epochs, one thread per process")
    head = ("1 process, seed 0", f"{args.nproc} processes (DDP), seed 0", "DDP - 1 process",
            "1 process, seed 1", "seed 1 - seed 0")
    print(f"{'':<30}" + "".join(f"{h:>{max(len(h) + 2, 12)}}" for h in head))

    def line(label, get, fmt):
        one, ddp, other = get("one"), get("ddp"), get("seed1")
        vals = (f"{one:{fmt}}", f"{ddp:{fmt}}", f"{ddp - one:+{fmt}}", f"{other:{fmt}}", f"{other - one:+{fmt}}")
        print(f"{label:<30}" + "".join(f"{v:>{max(len(h) + 2, 12)}}" for v, h in zip(vals, head)))

    line("wall seconds (launch to exit)", lambda k: walls[k], ".1f")
    for part in (k for k in history["one"] if k != "epoch"):
        line(f"last-epoch {part}", lambda k, part=part: history[k][part], ".3f")
    for r in sorted(acc["one"]):
        line("nominal accuracy" if r == 0 else f"adversarial accuracy r={r:g}", lambda k, r=r: acc[k][r], ".3f")
    print(f"(attack: native PGD 50 x 2 on 500 test digits; {ATTACK})")


if __name__ == "__main__":
    main()
