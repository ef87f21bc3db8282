"""Whose the gap is: the points a finished run leaves open (robust to every attack of its protocol, not certified by
CROWN), attacked again at several times the protocol's budget.

    python benchmarks/open_points.py leaderboard-runs/std-mnist5k-linf [--learners vae,se-adversarial]
                                     [--radii 0.05,0.1] [--json FILE]

Per encoder of the run folder (standard probe) and radius, on the run's own test points: the open points,
then three attacks on them, each far above its budget in the protocol (one thread, one after the other):
robrep's targeted APGD on the DLR loss (9 targets x 5 restarts x 200 iterations; the protocol's AutoAttack runs
1 x 100 per target), its untargeted APGD-DLR (10 restarts x 500 iterations) and robrep's PGD on the margin loss
(10 restarts x 1,000 steps). A point any of them breaks is one the protocol's attacks missed (the attacked
number is too high there); none broken says the open points withstand much stronger attacks, and the gap is the
certifier's to close (``benchmarks/complete.py``). Prints per encoder and attack the points broken and seconds.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from script_command import command

from robrep.attacks import PGD
from robrep.attacks.apgd import APGD
from robrep.certify import certified
from robrep.data import load_dataset
from robrep.harness.plan import claim_points
from robrep.rows.files import read_results
from robrep.rows.masks import attacked_robust
from robrep.verify import attacked_model, claims

ATTACKS = {  # key: (what it is, the attack)
    "apgd_t": ("APGD-T 9 targets x 5 x 200", lambda: APGD(steps=200, restarts=5, loss="dlr-targeted", n_targets=9)),
    "apgd_dlr": ("APGD-DLR 10 x 500", lambda: APGD(steps=500, restarts=10, loss="dlr")),
    "pgd_margin": ("PGD (margin) 10 x 1000", lambda: PGD(steps=1000, restarts=10, loss="margin")),
}


def measure(folder: Path, first, df, radius: float) -> dict:
    model = attacked_model(folder, first, str(first["checkpoint"]), "cpu").eval()
    ds = load_dataset(first["dataset"])
    idx, x, y = claim_points(ds, first)
    radii = sorted(set(float(r) for r in df[(df["run"] == first["run"]) & (df["task"] == first["task"])]["radius"]))
    robust = attacked_robust(folder, df, first, radii)[radii.index(radius)]
    sure = certified(model, x, y, radius, first["norm"], "crown")
    opened = (robust & ~sure).nonzero().flatten()
    out = {"learner": first["learner"], "arch": first["arch"], "radius": radius, "n": len(x),
           "attacked": float(robust.float().mean()), "crown": float(sure.float().mean()), "open": len(opened)}
    broken_any = torch.zeros(len(opened), dtype=torch.bool)
    for key, (name, make) in ATTACKS.items():
        t0 = time.perf_counter()
        res = make().run(model, x[opened], y[opened], [radius], seed=1)
        broken = ~res.robust[radius]
        broken_any |= broken
        out[key] = int(broken.sum())
        out[f"{key}_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{first['learner']:16s} radius {radius:g}: {name}: broke {int(broken.sum())} of {len(opened)} open "
              f"points in {out[f'{key}_seconds']:.0f} s {idx[opened[broken]].tolist()[:10]}", flush=True)
    out["broken"] = int(broken_any.sum())
    out["attacked_after"] = out["attacked"] - out["broken"] / len(x)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--radii", default="0.05,0.1", help="comma list of the run's radii")
    parser.add_argument("--learners", default=None, help="comma list (default: every standard-probe claim)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    df = read_results(args.run / "results.csv")
    wanted = set(args.learners.split(",")) if args.learners else None
    rows = []
    for _, group in claims(df).groupby(["run", "task", "probe"]):
        first = group.iloc[0]
        if first["probe"] != "standard" or (wanted and first["learner"] not in wanted):
            continue
        rows += [measure(args.run, first, df, float(r)) for r in args.radii.split(",")]
    if args.json:
        args.json.write_text(json.dumps({"command": command(), "machine": platform.machine(), "threads": 1,
                                         "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
