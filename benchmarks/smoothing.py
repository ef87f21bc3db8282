"""Randomized smoothing (a separate measure: it certifies the smoothed probe∘encoder, not the encoder's own
probe) on an L2 board's run folder, beside the protocol's attacked accuracy of the base classifier.

    python benchmarks/smoothing.py leaderboard-runs/std-mnist5k-l2d --sigmas 0.25,0.5,1 --n 2000 [--json FILE]

Per encoder (standard probe), on the claim's test points, per noise level sigma (one record each): the smoothed
classifier's certified L2 accuracy at every radius of the run (``r=<radius>``) beside the base classifier's
attacked accuracy there (``attacked r=<radius>``) (``robrep.certify.smoothing``: the paper's CERTIFY, n0 = 100
selection samples, ``--n`` estimation samples, alpha = 0.001 per point), and the seconds it took.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from script_command import command
from robrep.certify.smoothing import certify_smoothed
from robrep.data import load_dataset
from robrep.harness.plan import claim_points
from robrep.rows.files import read_results
from robrep.verify import attacked_model, claims


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--sigmas", default="0.25,0.5,1")
    parser.add_argument("--n", type=int, default=2000, help="estimation samples per point")
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    df = read_results(args.run / "results.csv")
    rows = []
    for _, g in claims(df).groupby(["run", "task", "probe"]):
        first = g.iloc[0]
        if first["probe"] != "standard":
            continue
        model = attacked_model(args.run, first, str(first["checkpoint"]), "cpu")
        ds = load_dataset(first["dataset"])
        _, x, y = claim_points(ds, first)
        radii = sorted(float(r) for r in g["radius"])
        attacked = dict(zip(g["radius"].astype(float), g["adversarial_accuracy"].astype(float)))
        for sigma in (float(s) for s in args.sigmas.split(",")):
            t0 = time.perf_counter()
            s = certify_smoothed(model, x, sigma, n0=100, n=args.n, alpha=args.alpha)
            seconds = round(time.perf_counter() - t0, 1)
            rows.append({"learner": first["learner"], "arch": first["arch"], "task": first["task"], "sigma": sigma,
                         **{f"r={r:g}": s.accuracy(y, r) for r in radii},
                         **{f"attacked r={r:g}": attacked[r] for r in radii},
                         "n0": 100, "n": args.n, "alpha": args.alpha, "seconds": seconds})
            print(f"{first['learner']:16} sigma {sigma:g}: " + "  ".join(
                f"r={r:g} {s.accuracy(y, r):.3f} (attacked {attacked[r]:.3f})" for r in radii) + f"  ({seconds} s)",
                flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": command(),
                                         "machine": platform.machine(), "threads": 1, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
