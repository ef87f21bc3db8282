"""Wall time of the default `robrep bench`, cold and warm, and what the attack's reuse saves.

    python benchmarks/bench_default.py [--skip-naive] [--learners vae,se-adversarial]

1. cold: `robrep bench` with an empty cache (trains the four learners, probes, attacks);
2. warm: again with the same cache and a new output folder (checkpoints reused, attacks re-run);
3. resumed: again into the same output folder (every cell already done);
4. reuse: on the checkpoints trained in step 1, the native PGD (100 x 10, 1,000 test digits,
   the default radii) with its reuse (points broken at a smaller radius, in an earlier restart
   or at an earlier iterate are not attacked again) against the same attack without it,
   in the same process, as a ratio of wall seconds;
5. floor (``--floor``): the cold run again, in this process with another empty cache, with every matrix
   product counted (torch's own FLOP formulas, ``torch.utils.flop_counter``): the matrix-product work of
   training and of the rest (probes, attacks) in FLOPs, and that work at the measured throughput, against
   the cold run's wall seconds. The counted run must
   train the same encoders (SHA-256) and give the same numbers as the timed one, so it counts the timed
   run's work; the counting itself makes it about 3x slower, so it is not timed.
Prints numbers; asserts nothing about speed (this machine is shared and noisy). Its speed moves by a third
from hour to hour, so the matrix-product throughput of the attack's largest layer (1,000 x 784 by 784 x 400,
float32) is measured before and after the cold run: compare wall times at the same throughput.
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


def gemm_gflops(device: str = "cpu") -> float:
    """Float32 matrix-product throughput of the attack's first layer at batch 1,000 on ``device``, in GFLOP/s
    (median of 5)."""
    import statistics

    import torch

    x, w = torch.rand(1000, 784, device=device), torch.rand(400, 784, device=device)
    rates = []
    for _ in range(5):
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(40):
            torch.nn.functional.linear(x, w)
        if device != "cpu":
            torch.cuda.synchronize()
        rates.append(40 * 2 * 1000 * 784 * 400 / (time.perf_counter() - t0) / 1e9)
    return statistics.median(rates)


def training_seconds(rows) -> float:
    """The training time of a run's encoders, from its rows (each run's train_seconds, once)."""
    return rows.drop_duplicates("run")["train_seconds"].sum()


def split(results: Path) -> str:
    """Where a run's time went, from its rows: training (each run's train_seconds) and attacks (each cell's)."""
    from robrep.rows import read_results

    df = read_results(results)
    cells = df[~df["attack"].str.contains("worst", na=False)].drop_duplicates(["run", "task", "suite", "attack"])
    return f"training {training_seconds(df):.1f} s, attacks {cells['wall_seconds'].sum():.1f} s"


def flop_counter():
    """A dispatch mode that adds up the FLOPs of every matrix product and convolution run inside it (``.flops``),
    by torch's own formulas. (``FlopCounterMode`` itself cannot be used: its module tracker refuses the
    ``autograd.grad`` of the SE's selection.)"""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class MatrixFlops(TorchDispatchMode):
        flops = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                self.flops += formula(*args, **(kwargs or {}), out_val=out)
            return out

    return MatrixFlops()


def floor(work: Path, cold_rows, cold_seconds: float, gflops: float) -> None:
    """Step 5: the default bench's matrix-product FLOPs (training, the rest), counted on a second cold run that
    must reproduce the timed one, and the seconds they need at ``gflops``."""
    os.environ["ROBREP_CACHE"] = str(work / "floor-cache")
    import robrep
    from robrep.harness import BenchConfig

    cfg = BenchConfig(out=str(work / "floor"))
    with flop_counter() as counted:
        for name in cfg.learners:  # the bench's own training (same config, same cache folder), counted apart
            robrep.train(name, cfg.datasets[0], seed=cfg.seed, arch=cfg.arch)
    train_flops = counted.flops
    with flop_counter() as counted:
        rows = robrep.bench(cfg)
    rest_flops = counted.flops
    cols = ["learner", "radius", "encoder_sha256", "probe_sha256", "adversarial_accuracy"]
    same = (rows[cols].sort_values(cols[:2]).reset_index(drop=True)
            .equals(cold_rows[cols].sort_values(cols[:2]).reset_index(drop=True)))
    if not same:
        print("\nfloor: the counted run did not reproduce the timed one (other encoders or numbers); not reported")
        return
    train_s = training_seconds(cold_rows)
    t_floor, r_floor = train_flops / gflops / 1e9, rest_flops / gflops / 1e9
    print("\nmatrix products of the cold run (counted on a run with the same encoders and numbers), "
          f"at {gflops:.0f} GFLOP/s:")
    print(f"  training        : {train_flops / 1e12:6.2f} TFLOP = {t_floor:6.1f} s   (took {train_s:.1f} s)")
    print(f"  probes, attacks : {rest_flops / 1e12:6.2f} TFLOP = {r_floor:6.1f} s   "
          f"(the rest of the cold run took {cold_seconds - train_s:.1f} s)")
    print(f"  all             : {(train_flops + rest_flops) / 1e12:6.2f} TFLOP = {t_floor + r_floor:6.1f} s   "
          f"(the cold run took {cold_seconds:.1f} s: {(t_floor + r_floor) / cold_seconds:.0%} of it is that floor)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-naive", action="store_true", help="skip the reuse comparison (step 4)")
    ap.add_argument("--learners", default="vae,beta-vae,se-random,se-adversarial", help="learners for step 4")
    ap.add_argument("--floor", action="store_true", help="count the cold run's matrix-product work (step 5)")
    ap.add_argument("--json", type=Path, help="also write steps 1 to 3 here (the README's run time is read from "
                    "benchmarks/results/bench_default.json)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="robrep-bench-default-"))
    env = {**os.environ, "ROBREP_CACHE": str(work / "cache")}
    robrep_cmd = [str(Path(sys.executable).parent / "robrep"), "bench"]
    before = gemm_gflops()
    cold = timed(robrep_cmd + ["--out", str(work / "cold")], env)
    after = gemm_gflops()
    warm = timed(robrep_cmd + ["--out", str(work / "warm")], env)
    resumed = timed(robrep_cmd + ["--out", str(work / "warm")], env)
    print(f"robrep bench (defaults: 4 learners, mnist5k, PGD 100 x 10, 1,000 digits, 5 radii), {os.cpu_count()} CPUs")
    print(f"  cold  (train + probe + attack) : {cold:7.1f} s   ({split(work / 'cold' / 'results.csv')}; "
          f"matrix products at {before:.0f} GFLOP/s before, {after:.0f} after)")
    print(f"  warm  (checkpoints reused)     : {warm:7.1f} s")
    print(f"  resumed (all cells done)       : {resumed:7.1f} s")
    if args.json:
        import json
        import platform

        from robrep.provenance import machine

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": "robrep bench", "cold_seconds": round(cold, 1), "warm_seconds": round(warm, 1),
            "resumed_seconds": round(resumed, 1), "cpus": os.cpu_count(), "machine": machine("cpu"),
            "gflops": [round(before), round(after)], "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d"),
        }, indent=1) + "\n")

    from robrep.rows import read_results

    df = read_results(work / "cold" / "results.csv")
    print("\nadversarial accuracy (cold run):")
    print(df.pivot_table(index="learner", columns="radius", values="adversarial_accuracy").round(3).to_string())
    if args.floor:
        floor(work, df, cold, (before + after) / 2)
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
        learner = freeze(robrep.load(next((Path(env["ROBREP_CACHE"]) / "runs").glob(f"*/{runs[name]}"))))
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
