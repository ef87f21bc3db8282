"""The robustness sandwich of a board's run folders: certified (CROWN) below, attacked above, and the
representation's largest shift between an attack and a bound.

    python benchmarks/sandwich.py leaderboard-runs/std-mnist5k-linf [RUN ...] [--json FILE] [--shift-points 100]

For each run folder it runs ``robrep certify`` (the certified share beside every claimed row, checked against the
run's own attacks, written into the run's rows) and prints, per encoder and radius, the certified and the
attacked robust accuracy, the gap between them, and the certificate's seconds against the attacks' (the rows' own
wall seconds). Then, per encoder and radius, the task-free certificate on the first ``--shift-points`` test
points: the median and the 90th percentile of the largest shift ||mu(x + d) - mu(x)||_2 that PGD finds (a lower
bound) and of CROWN's upper bound on it.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from script_command import command
from robrep.certify import shift_attacked, shift_upper_bound
from robrep.certify.run import certify_run
from robrep.data import load_dataset
from robrep.harness.plan import test_indices
from robrep.rows.files import read_results
from robrep.verify import attacked_model, claims


def sandwich(folder: Path) -> tuple[list[dict], float]:
    t0 = time.perf_counter()
    rows = certify_run(folder)
    seconds = time.perf_counter() - t0
    df = read_results(folder / "results.csv")
    attack_seconds = df[df["suite"] != "worst-case"].drop_duplicates(["run", "probe", "task", "suite", "attack"]) \
        .groupby("run")["wall_seconds"].sum()
    out = [{"run": r["run"], "learner": r["learner"], "arch": r["arch"], "probe": r["probe"], "task": r["task"],
            "radius": float(r["radius"]), "certified": float(r["certified_accuracy"]),
            "attacked": float(r["adversarial_accuracy"]),
            "gap": float(r["adversarial_accuracy"]) - float(r["certified_accuracy"]),
            "attack_seconds": round(float(attack_seconds.get(r["run"], float("nan"))), 1)}
           for r in rows.sort_values(["learner", "radius"]).to_dict("records")]
    return out, seconds


def shifts(folder: Path, radii: list[float], points: int) -> list[dict]:
    df = read_results(folder / "results.csv")
    out = []
    for _, rows in claims(df).groupby(["run", "probe"]):  # task-free: one encoder's shift, whatever its tasks
        first = rows.iloc[0]
        if first["probe"] != "standard":
            continue
        model = attacked_model(folder, first, str(first["checkpoint"]), "cpu")
        ds = load_dataset(first["dataset"])
        idx = test_indices(len(ds.test), int(first["n_examples"]), int(first["seed"]))[:points]
        x = ds.test.batch(idx)
        for eps in radii:
            upper = shift_upper_bound(model, x, eps, first["norm"])
            lower = shift_attacked(model, x, eps, first["norm"], steps=50, restarts=3)
            out.append({"learner": first["learner"], "arch": first["arch"], "radius": eps, "points": len(x),
                        "attacked_median": float(lower.median()), "attacked_p90": float(lower.quantile(0.9)),
                        "bound_median": float(upper.median()), "bound_p90": float(upper.quantile(0.9))})
            r = out[-1]
            print(f"{r['learner']:16} {eps:5g}  shift attacked {r['attacked_median']:.3f} / {r['attacked_p90']:.3f}  "
                  f"bound {r['bound_median']:.3f} / {r['bound_p90']:.3f}  (median / 90th percentile)", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--shift-points", type=int, default=100)
    parser.add_argument("--shift-radii", default="0.02,0.05")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, timing, shift = [], [], []
    for run in args.runs:
        got, seconds = sandwich(run)
        rows += got
        attack = sum({r["run"]: r["attack_seconds"] for r in got}.values())
        timing.append({"run_folder": str(run), "certify_seconds": round(seconds, 1), "attack_seconds": round(attack, 1),
                       "ratio": round(seconds / attack, 3)})
        print(f"{run}: certified in {seconds:.0f} s, the attacks took {attack:.0f} s ({seconds / attack:.2f}x)")
        for r in got:
            print(f"{r['learner']:16} {r['arch']:5} {r['radius']:5g}  certified {r['certified']:.3f}  attacked "
                  f"{r['attacked']:.3f}  gap {r['gap']:.3f}")
        shift += shifts(run, [float(v) for v in args.shift_radii.split(",")], args.shift_points)
    if args.json:
        args.json.write_text(json.dumps({"command": command(),
                                         "machine": platform.processor() or platform.machine(), "threads": 1,
                                         "rows": rows, "timing": timing, "shift": shift}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
