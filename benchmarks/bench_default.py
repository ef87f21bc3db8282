"""Wall time of the default `robrep bench`, cold and warm, and what the attack's reuse saves.

    python benchmarks/bench_default.py [--skip-naive] [--learners vae,se-adversarial]

1. cold: `robrep bench` with an empty cache (trains the four learners, probes, attacks);
2. warm: again with the same cache and a new output folder (checkpoints reused, attacks re-run);
3. resumed: again into the same output folder (every cell already done);
4. reuse: on the checkpoints trained in step 1, the native PGD (100 x 10, 1,000 test digits,
   the default radii) with its reuse (points broken at a smaller radius, in an earlier restart
   or at an earlier iterate are not attacked again) against the same attack without it,
   in the same process, as a ratio of wall seconds.
Prints numbers; asserts nothing about speed (this machine is shared and noisy).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-naive", action="store_true", help="skip the reuse comparison (step 4)")
    ap.add_argument("--learners", default="vae,beta-vae,se-random,se-adversarial", help="learners for step 4")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="robrep-bench-default-"))
    env = {**os.environ, "ROBREP_CACHE": str(work / "cache")}
    robrep_cmd = [str(Path(sys.executable).parent / "robrep"), "bench"]
    cold = timed(robrep_cmd + ["--out", str(work / "cold")], env)
    warm = timed(robrep_cmd + ["--out", str(work / "warm")], env)
    resumed = timed(robrep_cmd + ["--out", str(work / "warm")], env)
    print(f"robrep bench (defaults: 4 learners, mnist5k, PGD 100 x 10, 1,000 digits, 5 radii), {os.cpu_count()} CPUs")
    print(f"  cold  (train + probe + attack) : {cold:7.1f} s")
    print(f"  warm  (checkpoints reused)     : {warm:7.1f} s")
    print(f"  resumed (all cells done)       : {resumed:7.1f} s")

    from robrep.results import read_results

    df = read_results(work / "cold" / "results.csv")
    print("\nadversarial accuracy (cold run):")
    print(df.pivot_table(index="learner", columns="radius", values="adversarial_accuracy").round(3).to_string())
    if args.skip_naive:
        return

    os.environ["ROBREP_CACHE"] = env["ROBREP_CACHE"]
    import robrep
    from robrep.attacks import PGD
    from robrep.harness import test_indices
    from robrep.probes import ProbedEncoder, features, freeze, train_probe

    ds = robrep.load_dataset("mnist5k")
    idx = test_indices(len(ds.test), 1000, 0)
    x, y = ds.test.batch(idx), ds.test.labels["digit"][idx]
    radii = [0.0, 0.05, 0.1, 0.15, 0.2]
    runs = {r["learner"]: r["run"] for _, r in df.drop_duplicates("run").iterrows()}
    print("\nreuse of the native PGD (100 x 10) vs attacking every point in every restart at every radius:")
    print(f"{'learner':16s} {'reuse s':>8s} {'naive s':>8s} {'ratio':>6s}   accuracy with reuse / naive per radius")
    total_fast = total_naive = 0.0
    for name in args.learners.split(","):
        learner = freeze(robrep.load(Path(env["ROBREP_CACHE"]) / "runs" / runs[name]))
        probe = train_probe(features(learner, ds.train.images), ds.train.labels["digit"], 10)
        model = ProbedEncoder(learner, probe)
        t0 = time.perf_counter()
        fast = PGD(steps=100, restarts=10).run(model, x, y, radii, seed=0)
        t_fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        naive = PGD(steps=100, restarts=10, reuse=False).run(model, x, y, radii, seed=0)
        t_naive = time.perf_counter() - t0
        total_fast, total_naive = total_fast + t_fast, total_naive + t_naive
        accs = "  ".join(f"{fast.accuracy(r):.3f}/{naive.accuracy(r):.3f}" for r in radii)
        print(f"{name:16s} {t_fast:8.1f} {t_naive:8.1f} {t_naive / t_fast:6.1f}x  {accs}")
    print(f"{'all':16s} {total_fast:8.1f} {total_naive:8.1f} {total_naive / total_fast:6.1f}x")


if __name__ == "__main__":
    main()
