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

With ``--against REV`` (part ``against``): figure 7's cascade with this tree and with robrep at git revision REV
(checked out into a temporary worktree, imported in a subprocess), both run at once, one thread each, each from
its own cache (encoders trained first, outside the timing; their SHA-256 must agree, or the comparison says so):
wall seconds of each and their ratio, the worst case per learner and radius side by side, and per point: the
points each side broke that the other left robust (the worst case over every attack of a cell, from the
per-example masks). A faster protocol that breaks fewer points is weaker: the point counts say so.
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

HERE = Path(__file__).resolve().parent
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


def _cascade_worker(folder: Path, n_examples: int) -> None:
    """Run by part ``against`` in a subprocess (robrep from its PYTHONPATH): train figure 7's encoders (a radius-0
    bench, untimed), then time its cascade into ``folder``; prints the seconds as JSON on its last line."""
    import json

    import robrep

    robrep.bench(**{**FIG7, "n_examples": 10, "radii": (0.0,)}, threads=1, out=str(folder / "warmup"))
    t0 = time.perf_counter()
    robrep.bench(**FIG7, n_examples=n_examples, worst_case="cascade", threads=1, out=str(folder / "cascade"))
    print(json.dumps({"seconds": time.perf_counter() - t0, "robrep": robrep.__file__}))


def _worst_points(folder: Path) -> dict:
    """(learner, radius) -> the set of test indices robust under every attack of the cell (its masks ANDed)."""
    import pandas as pd
    from safetensors.torch import load_file

    rows = pd.read_csv(folder / "results.csv")
    out = {}
    for run, learner in rows.drop_duplicates("run").set_index("run")["learner"].items():
        files = [f for f in sorted((folder / "examples" / run).rglob("*.safetensors"))
                 if not f.name.startswith("certified--")]
        stored = [load_file(f) for f in files]
        robust = torch.stack([s["robust"].bool() for s in stored]).all(0)
        radii, idx = stored[0]["radii"].tolist(), stored[0]["indices"].tolist()
        for k, r in enumerate(radii):
            out[(learner, r)] = {i for i, keep in zip(idx, robust[k].tolist()) if keep}
    return out


def _start_sides(procs: dict, sides: dict, n_examples: int, out: Path) -> None:
    """Start one ``--worker`` per side (name -> tree to import robrep from), one thread and its own cache each,
    into ``procs`` (name -> (tree, folder, process))."""
    for k, (name, path) in enumerate(sides.items()):
        env = dict(os.environ, OMP_NUM_THREADS="1", ROBREP_CACHE=str(out / f"cache-{k}"),
                   PYTHONPATH=os.pathsep.join(p for p in (str(path), os.environ.get("PYTHONPATH")) if p))
        folder = out / f"side-{k}"
        folder.mkdir(parents=True)
        with open(folder / "stdout", "w") as o, open(folder / "stderr", "w") as e:  # no pipe to fill
            procs[name] = (path, folder, subprocess.Popen(
                [sys.executable, str(HERE / "protocol_cost.py"), "--worker", str(folder), str(n_examples)],
                env=env, cwd=path, stdout=o, stderr=e))


def _finished_sides(procs: dict) -> dict:
    """name -> (its cascade's run folder, its seconds), once every side has ended; refused if one failed or
    imported robrep from elsewhere than its tree."""
    import json

    got = {}
    for name, (path, folder, proc) in procs.items():
        if proc.wait():
            raise SystemExit(f"{name}: the cascade failed\n{(folder / 'stderr').read_text()[-3000:]}")
        done = json.loads((folder / "stdout").read_text().strip().splitlines()[-1])
        if not Path(done["robrep"]).resolve().is_relative_to(Path(path).resolve()):
            raise SystemExit(f"{name}: imported robrep from {done['robrep']}, not from {path}")
        got[name] = (folder / "cascade", done["seconds"])
    return got


def part_against(rev: str, n_examples: int, out: Path) -> None:
    import pandas as pd
    from revision import checked_out

    procs = {}
    with checked_out(rev) as tree:
        try:
            _start_sides(procs, {"this tree": HERE.parent, rev: tree}, n_examples, out)
            got = _finished_sides(procs)
        finally:
            for _, _, proc in procs.values():  # the other side, when one failed
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    (new, t_new), (old, t_old) = got["this tree"], got[rev]
    rows = {side: pd.read_csv(folder / "results.csv") for side, (folder, _) in got.items()}
    shas = {side: df.groupby("learner")["encoder_sha256"].first() for side, df in rows.items()}
    if set(shas["this tree"].index) != set(shas[rev].index):
        raise SystemExit(f"the two sides ran other learners: {sorted(shas['this tree'].index)} / {sorted(shas[rev].index)}")
    same = (shas["this tree"] == shas[rev].reindex(shas["this tree"].index)).all()
    print(f"\nfigure 7's cascade ({n_examples} digits, 3 learners, 10 attacks, 5 radii), one thread each, at once:")
    print(f"   this tree: {t_new:8.0f} s")
    print(f"   {rev:9s}: {t_old:8.0f} s   {rev} / this tree = {t_old / t_new:.2f}")
    print(f"   encoders identical on both sides (SHA-256): {same}")
    wn, wo = _worst_points(new), _worst_points(old)
    if set(wn) != set(wo):
        raise SystemExit(f"the two sides' cells differ: {sorted(set(wn) ^ set(wo))}")
    print(f"   worst case per radius, {rev} | this tree; points broken by one side only ({rev} only / this tree only):")
    for key in sorted(wn):
        a, b = wo[key], wn[key]
        print(f"   {key[0]:16s} r={key[1]:<5g} {len(a) / n_examples:6.3f} | {len(b) / n_examples:6.3f}   "
              f"{len(b - a):3d} / {len(a - b):3d}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="cascade,pgd,threads")
    ap.add_argument("--n-examples", type=int, default=500)
    ap.add_argument("--out", type=Path, help="run folders (default: a temporary folder, removed afterwards)")
    ap.add_argument("--against", metavar="REV", help="part 'against': figure 7's cascade here and at git revision REV")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _cascade_worker(Path(args.worker[0]), int(args.worker[1]))
    if args.against and "against" not in args.part.split(","):
        args.part = "against" if args.part == ap.get_default("part") else f"{args.part},against"
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
        if "against" in parts:
            if not args.against:
                raise SystemExit("the part 'against' needs --against REV")
            part_against(args.against, args.n_examples, out)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
