"""How much of the gap between certified and attacked robust accuracy the tighter methods close, and at what cost.

    python benchmarks/complete.py leaderboard-runs/std-mnist5k-linf --radius 0.05 --seconds 20 [--points N]
        [--solver bab|milp] [--json FILE]

Per encoder of the run folder (standard probe), at one radius, on the same test points as the run's claim:

1. CROWN and alpha-CROWN (``robrep.certify.bounds``): the certified share and the seconds of each;
2. the complete method (``--solver``: branch and bound over alpha-beta-CROWN bounds, ``robrep.certify.bab``, or
   the mixed-integer program of ``robrep.certify.complete``; a time limit per point) on the open points (robust
   to every attack of the run, not certified by alpha-CROWN; all of them, or the first ``--points``): how many it
   certifies, breaks or leaves open, the seconds per point and the unstable units (binaries) per point;
3. the gap (attacked minus certified) before, after alpha-CROWN, and after the complete method (measured where it
   ran on every open point; else projected: the sample's decided share applied to all open points), with the
   time that takes.

A point the complete method breaks that every attack left robust is counted apart: the attacked number is then
too high.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from script_command import command
from robrep.certify import certified
from robrep.certify.bab import branch_and_bound
from robrep.certify.complete import BROKEN, CERTIFIED, decide
from robrep.rows.masks import attacked_robust
from robrep.data import load_dataset
from robrep.harness.plan import claim_points
from robrep.rows.files import read_results
from robrep.verify import attacked_model, claims


def measure(folder: Path, first, df, radius: float, points: int, seconds: float, solver: str,
            bounds: str = "alpha-crown") -> dict:
    model = attacked_model(folder, first, str(first["checkpoint"]), "cpu")
    ds = load_dataset(first["dataset"])
    _, x, y = claim_points(ds, first)
    radii = sorted(set(float(r) for r in df[(df["run"] == first["run"]) & (df["task"] == first["task"])]["radius"]))
    robust = attacked_robust(folder, df, first, radii)[radii.index(radius)]
    out = {"learner": first["learner"], "arch": first["arch"], "radius": radius, "n": len(x),
           "attacked": float(robust.float().mean())}
    for method in ("crown", "alpha-crown"):
        if method == "alpha-crown" and bounds == "crown":  # not run (ConvNets: its dense rows take minutes a point)
            out[method], out[f"{method}_seconds"] = out["crown"], 0.0
            continue
        t0 = time.perf_counter()
        with torch.no_grad():
            sure = certified(model, x, y, radius, first["norm"], method, batch_size=50)
        out[method], out[f"{method}_seconds"] = float(sure.float().mean()), round(time.perf_counter() - t0, 1)
        if (sure & ~robust).any():
            raise SystemExit(f"{first['run']}: {method} certified a point an attack broke: unsound")
    opened = (robust & ~sure).nonzero().flatten()
    sample = opened[:points] if points else opened
    t0 = time.perf_counter()
    if solver == "bab":
        d = branch_and_bound(model, x, y, radius, norm=first["norm"], time_limit=seconds, points=sample,
                             method=bounds)
    else:
        d = decide(model, x, y, radius, time_limit=seconds, points=sample, method="alpha-crown")
    spent = time.perf_counter() - t0
    status = d.status[sample]
    decided = {"certified": int((status == CERTIFIED).sum()), "broken": int((status == BROKEN).sum())}
    share = {k: v / max(len(sample), 1) for k, v in decided.items()}
    out.update(solver=solver, seconds_limit=seconds, open=len(opened), sample=len(sample), **{f"complete_{k}": v for k, v in decided.items()},
               complete_unknown=len(sample) - sum(decided.values()),
               complete_seconds_per_point=round(spent / max(len(sample), 1), 1),
               binaries_median=float(torch.tensor([float(d.binaries[int(i)]) for i in sample]).median())
               if len(sample) else 0.0,
               gap_crown=out["attacked"] - out["crown"], gap_alpha=out["attacked"] - out["alpha-crown"])
    # over every open point: measured where the sample is all of them, else projected from the sample's shares
    n_open = len(opened) / len(x)
    out["gap_complete_projected"] = out["gap_alpha"] - n_open * (share["certified"] + share["broken"])
    out["complete_projected_seconds"] = round(len(opened) * spent / max(len(sample), 1))
    out["certified_after"] = out["alpha-crown"] + n_open * share["certified"]  # the certified share with it
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--radius", type=float, default=0.05)
    parser.add_argument("--points", type=int, default=0,
                        help="open points per encoder given to the complete method (default 0: all of them)")
    parser.add_argument("--solver", choices=("bab", "milp"), default="bab")
    parser.add_argument("--bounds", choices=("crown", "alpha-crown"), default="alpha-crown",
                        help="the bounds the open points are taken from and branch and bound starts at (crown: "
                             "alpha-CROWN is not run; for ConvNets)")
    parser.add_argument("--seconds", type=float, default=30.0, help="the complete method's time limit per point")
    parser.add_argument("--learners", default=None, help="comma list (default: every standard-probe claim)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    df = read_results(args.run / "results.csv")
    rows = []
    for _, g in claims(df).groupby(["run", "task", "probe"]):
        first = g.iloc[0]
        if first["probe"] != "standard" or (args.learners and first["learner"] not in args.learners.split(",")):
            continue
        r = measure(args.run, first, df, args.radius, args.points, args.seconds, args.solver, args.bounds)
        rows.append(r)
        print(f"{r['learner']:16} r={r['radius']:g}  attacked {r['attacked']:.3f}  crown {r['crown']:.3f} "
              f"({r['crown_seconds']} s)  alpha-crown {r['alpha-crown']:.3f} ({r['alpha-crown_seconds']} s)  "
              f"complete on {r['sample']} of {r['open']} open: {r['complete_certified']} certified, "
              f"{r['complete_broken']} broken, {r['complete_unknown']} open ({r['complete_seconds_per_point']} s/point, "
              f"{r['binaries_median']:.0f} binaries)  gap {r['gap_crown']:.3f} -> {r['gap_alpha']:.3f} -> "
              f"{r['gap_complete_projected']:.3f} ({'measured' if r['sample'] == r['open'] else 'projected'}, "
              f"{r['complete_projected_seconds']} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"command": command(),
                                         "machine": platform.machine(), "threads": 1, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
