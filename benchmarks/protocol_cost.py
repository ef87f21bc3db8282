"""What the full protocol costs: the cascade against every attack on every point, native PGD against
torchattacks PGD, threads (the native PGD's share of the matrix-product throughput: ``benchmarks/pgd_core.py``).

    python benchmarks/protocol_cost.py [--part cascade,pgd,threads] [--n-examples 500] [--out DIR]

1. ``cascade``: figure 7's config (VAE, SE random, SE adversarial on mnist5k; native, torchattacks and
   foolbox; radii 0 to 0.2; 100 steps x 10 restarts; ``--n-examples`` test digits) run twice into fresh
   folders from the cached checkpoints (trained first if missing), ``--worst-case per-attack`` then
   ``cascade``: wall seconds of each, their ratio, and the worst case at every radius side by side.
2. ``pgd``: robrep's native PGD against torchattacks' PGD (100 x 10, the same random-restart scheme) on
   the default VAE and SE adversarial, 1,000 test digits, each radius alone: seconds and ratio.
3. ``threads``: a small three-suite bench of the default VAE (``robrep bench``, 200 digits, radii 0 and 0.1,
   10 x 2) with ``--threads`` 1 and the default (this process's cores), on an idle machine and beside
   another process that keeps every core busy with matrix products.
All in one process, one after the other: the ratios are from the same run. Prints numbers; asserts nothing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

FIG7 = dict(learners=("vae", "se-random", "se-adversarial"), datasets=("mnist5k",),
            suites=("native", "torchattacks", "foolbox"), radii=(0.0, 0.05, 0.1, 0.15, 0.2), steps=100, restarts=10,
            seed=0, learner_config={"se-adversarial": {"selection_steps": 20, "selection_start": "random"}})  # the paper's L = 20, as fig. 7 pins it


def part_cascade(n_examples: int, out: Path) -> None:
    import robrep

    robrep.bench(**{**FIG7, "n_examples": n_examples, "radii": (0.0,)}, out=str(out / "warmup"))  # train if missing
    walls, worst = {}, {}
    for mode in ("per-attack", "cascade"):
        t0 = time.perf_counter()
        df = robrep.bench(**FIG7, n_examples=n_examples, worst_case=mode, out=str(out / mode))
        walls[mode] = time.perf_counter() - t0
        worst[mode] = df[df["suite"] == "worst-case"].pivot_table(index="learner", columns="radius",
                                                                  values="adversarial_accuracy")
    print(f"\n1. figure 7's protocol ({n_examples} digits, 3 learners, 10 attacks, 5 radii), "
          f"{torch.get_num_threads()} threads")
    print(f"   per-attack: {walls['per-attack']:8.0f} s")
    print(f"   cascade   : {walls['cascade']:8.0f} s   per-attack / cascade = {walls['per-attack'] / walls['cascade']:.2f}")
    print("   worst case, per-attack | cascade:")
    radii = list(worst["cascade"].columns)
    print("   " + f"{'learner':16s}" + "".join(f"{r:>15g}" for r in radii))
    for learner in worst["cascade"].index:
        cells = "".join(f"{worst['per-attack'].loc[learner, r]:7.3f} |{worst['cascade'].loc[learner, r]:6.3f}"
                        for r in radii)
        print(f"   {learner:16s}{cells}")
    diff = (worst["per-attack"] - worst["cascade"]).abs().to_numpy().max()
    print(f"   largest difference: {diff:.3f}")


def _default_model(learner: str):
    """The default checkpoint of ``learner`` on mnist5k (trained first if not cached; the SE with the paper's L = 20,
    as measured for the README), a probe, 1,000 digits."""
    import robrep
    from robrep.harness import test_indices
    from robrep.probes import ProbedEncoder, features, train_probe

    with tempfile.TemporaryDirectory(prefix="robrep-cost-") as tmp:
        df = robrep.bench(learners=(learner,), radii=(0.0,), n_examples=10, out=tmp,
                          learner_config={"se-adversarial": {"selection_steps": 20, "selection_start": "random"}})
    model = robrep.load(df["checkpoint"].iloc[0])
    ds = robrep.load_dataset("mnist5k")
    probe = train_probe(features(model, ds.train.images), ds.train.labels["digit"], 10)
    idx = test_indices(len(ds.test), 1000, 0)
    return ProbedEncoder(model, probe), ds.test.batch(idx), ds.test.labels["digit"][idx]


def part_pgd() -> None:
    from robrep.attacks import PGD, TorchattacksAttack

    print("\n2. native PGD vs torchattacks PGD, 100 x 10, 1,000 digits, each radius alone (seconds)")
    print(f"   {'encoder':16s}" + "".join(f"{'r=' + str(r):>28s}" for r in (0.05, 0.1, 0.2)))
    native = PGD(steps=100, restarts=10)
    ta = TorchattacksAttack("PGD", {"steps": 100, "rel_alpha": 2.5, "random_start": True}, restarts=10)
    for learner in ("vae", "se-adversarial"):
        model, x, y = _default_model(learner)
        cells = []
        for r in (0.05, 0.1, 0.2):
            t = {}
            for name, attack in (("torchattacks", ta), ("native", native)):
                t0 = time.perf_counter()
                res = attack.run(model, x, y, [r], seed=0)
                t[name] = (time.perf_counter() - t0, res.accuracy(r))
            cells.append(f"{t['torchattacks'][0]:6.1f} vs {t['native'][0]:5.1f} ({t['torchattacks'][0] / t['native'][0]:4.1f}x)")
        print(f"   {learner:16s}" + "".join(f"{c:>28s}" for c in cells))


BUSY = "import torch\nwhile True:\n    a = torch.randn(1024, 1024); a @ a\n"


def part_threads(out: Path) -> None:
    from robrep.threads import cores

    cmd = [sys.executable, "-m", "robrep", "bench", "--learner", "vae", "--suite", "native", "--suite", "torchattacks",
           "--suite", "foolbox", "--n-examples", "200", "--radii", "0,0.1", "--steps", "10", "--restarts", "2"]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    subprocess.run([*cmd, "--out", str(out / "threads-warmup")], env=env, check=True, capture_output=True)
    print(f"\n4. three-suite VAE bench (200 digits, 10 x 2), {cores()} cores, seconds:")
    for busy in (False, True):
        other = subprocess.Popen([sys.executable, "-c", BUSY], env=env) if busy else None
        try:
            times = {}
            for n in (1, cores()):
                t0 = time.perf_counter()
                subprocess.run([*cmd, "--threads", str(n), "--out", str(out / f"threads-{busy}-{n}")], env=env,
                               check=True, capture_output=True)
                times[n] = time.perf_counter() - t0
        finally:
            if other is not None:
                other.kill()
        where = "beside a busy process" if busy else "idle machine         "
        print(f"   {where}: " + ", ".join(f"{n} thread(s) {t:6.1f} s" for n, t in times.items())
              + f"   ({times[cores()] / times[1]:.2f}x the 1-thread time with {cores()})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="cascade,pgd,threads")
    ap.add_argument("--n-examples", type=int, default=500)
    ap.add_argument("--out", type=Path, help="run folders (default: a temporary folder, removed afterwards)")
    args = ap.parse_args()
    parts = args.part.split(",")
    out = args.out or Path(tempfile.mkdtemp(prefix="robrep-protocol-cost-"))
    try:
        if "peak" in parts:
            raise SystemExit("the part 'peak' is benchmarks/pgd_core.py now")
        if "pgd" in parts:
            part_pgd()
        if "threads" in parts:
            part_threads(out)
        if "cascade" in parts:
            part_cascade(args.n_examples, out)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
