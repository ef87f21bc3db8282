"""Every attack of every suite next to robrep's native PGD, on a trained VAE and a trained SE.

    python benchmarks/suites_compare.py [--n-examples 500] [--steps 100] [--restarts 10] [--out DIR]

Runs `robrep.bench` with the native, torchattacks and foolbox suites on mnist5k (default
checkpoints of `vae` and `se-adversarial`, trained first if not cached), with the same
steps x restarts for every attack that has them, and prints per attack its wall seconds and
adversarial accuracy per radius, plus the worst case. One process, one machine: the wall
seconds are comparable with each other. Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import time

import robrep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-examples", type=int, default=500)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--radii", default="0,0.05,0.1,0.2")
    ap.add_argument("--out", default="robrep-suites-compare")
    args = ap.parse_args()
    radii = [float(r) for r in args.radii.split(",")]
    t0 = time.perf_counter()
    df = robrep.bench(learners=("vae", "se-adversarial"), suites=("native", "torchattacks", "foolbox"), radii=radii,
                      steps=args.steps, restarts=args.restarts, n_examples=args.n_examples, out=args.out,
                      worst_case="per-attack")  # each attack's own accuracy, on every point
    total = time.perf_counter() - t0
    print(f"mnist5k, {args.n_examples} test digits, steps x restarts = {args.steps} x {args.restarts} "
          f"where the attack has them; total {total:.0f} s\n")
    header = f"{'learner':15s} {'suite/attack':44s} {'steps':>5s} {'rst':>4s} {'wall s':>7s}  " + \
        "  ".join(f"r={r:<5g}" for r in radii)
    print(header)
    print("-" * len(header))
    for learner, g in df.groupby("learner", sort=False):
        for (suite, attack), a in g.groupby(["suite", "attack"], sort=True):
            a = a.set_index("radius")
            cfg = json.loads(a["attack_config"].iloc[0]) if suite != "worst-case" else {}
            kw = cfg.get("kwargs", {})
            steps = cfg.get("steps", kw.get("steps", kw.get("n_queries", "")))
            restarts = a["restarts"].iloc[0]
            restarts = "" if restarts != restarts else int(restarts)  # NaN: the attack has no restarts
            accs = "  ".join(f"{a.loc[r, 'adversarial_accuracy']:7.3f}" for r in radii)
            print(f"{learner:15s} {suite + '/' + attack:44s} {str(steps):>5s} {str(restarts):>4s} "
                  f"{a['wall_seconds'].iloc[0]:7.1f}  {accs}")
        print()
    warnings = df[df["warnings"].astype(object).fillna("") != ""]
    for _, w in warnings.iterrows():
        print(f"warning: {w['learner']} r={w['radius']:g}: {w['warnings']}")
    print(f"all checks passed: {bool(df['checks_passed'].all())}")


if __name__ == "__main__":
    main()
