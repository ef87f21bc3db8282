"""Scaling out: the same bench on 1 and 2 processes, and what the paper's Table 1 on the real CelebA costs.

    python benchmarks/scale.py [--skip-runs] [--gpu-tflops 10] [--threads 1]

1. **Measured.** One ``robrep bench`` config (two learners trained from an empty cache, two suites)
   runs as one process and as ``torchrun --nproc_per_node=2``, one thread per process, one after
   the other in this run. Prints wall seconds, speed-up, parallel efficiency, and whether the two
   results.csv files hold the same rows, key by key, with the same numbers.
2. **Projected.** The cost of ``benchmarks/paper/table1_celeba.toml`` on the real CelebA (162,770
   training faces at 64 x 64, 17 tasks, 3 suites, 1,000 test points, PGD 100 x 10): per attack
   cell, the forward+backward passes of its full budget (an upper bound: attacks that stop on
   success do less); the throughput of the conv encoder + probe measured here (forward+backward
   and forward only) and of both learners' training steps; the FLOPs per image of an attack step counted by
   ``torch.utils.flop_counter``. GPU hours assume a sustained ``--gpu-tflops`` per GPU (an
   assumption, printed with the image rate it implies); training is scaled from this machine by
   the same factor as the attacks. The wall time on 1 and 8 GPUs is simulated as robrep hands out
   work: each learner trained whole by one rank, and a job's cells queued for the first free rank
   as soon as that learner is ready.
"""
from __future__ import annotations

import argparse
import heapq
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = ["--learner", "vae", "--learner", "se-random", "--suite", "native", "--suite", "foolbox", "--epochs", "5",
           "--n-examples", "500", "--steps", "100", "--restarts", "5", "--radii", "0,0.05,0.1,0.2"]


def _run(nproc: int, folder: Path, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "ROBREP_CACHE": str(folder / "cache")}
    env.pop("WORLD_SIZE", None)
    launch = [sys.executable, "-m", "robrep"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "robrep"]
    t0 = time.perf_counter()
    res = subprocess.run([*launch, "bench", *OPTIONS, "--out", str(folder / "out")], env=env, capture_output=True,
                         text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"{nproc}-process run failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return wall


def _same_rows(a: Path, b: Path) -> tuple[int, int]:
    """(rows, rows that differ in any field but when and where they ran) of two results.csv files."""
    from robrep.rows import PER_RUN, read_results, row_key

    def keyed(path):
        return {row_key(r): {k: str(v) for k, v in r.items() if k not in PER_RUN}
                for r in read_results(path).to_dict("records")}

    x, y = keyed(a), keyed(b)
    return len(x), sum(1 for k in set(x) | set(y) if x.get(k) != y.get(k))


def measured(threads: int) -> None:
    print(f"1. the same bench on 1 and 2 processes ({threads} thread(s) each), cold cache (training included)")
    print("   robrep bench " + " ".join(OPTIONS))
    with tempfile.TemporaryDirectory() as tmp:
        walls = {n: _run(n, Path(tmp) / f"p{n}", threads) for n in (1, 2)}
        rows, differ = _same_rows(Path(tmp) / "p1" / "out" / "results.csv", Path(tmp) / "p2" / "out" / "results.csv")
    speedup = walls[1] / walls[2]
    print(f"   1 process : {walls[1]:7.1f} s")
    print(f"   2 processes: {walls[2]:7.1f} s   speed-up {speedup:.2f}x   efficiency {speedup / 2:.0%}")
    print(f"   rows: {rows}, differing between the two runs: {differ}")


# --- the projection -----------------------------------------------------------------------------------------

N_TRAIN, N_TEST_ATTACKED, N_TASKS = 162_770, 1000, 17


def _passes(attack) -> tuple[float, float]:
    """(forward+backward passes, forward-only passes) per example at one radius, at the attack's full budget."""
    s = attack.settings()
    kw = s.get("kwargs", {})
    name = s.get("attack", attack.name)
    if name == "BinaryAutoAttack":  # APGD-CE 100 x 1, FAB 100 steps (one gradient per class), Square 5,000 queries
        return 100 + 100 * 2, 5000
    if name == "Square":
        return 0, kw["n_queries"] * kw.get("n_restarts", 1)
    if name == "FGSM":
        return 1, 0
    if name == "FAB":
        return kw["steps"] * kw["n_classes"] * kw.get("n_restarts", 1), 0
    if name == "LinfDeepFoolAttack":
        return kw["steps"] * kw["candidates"], 0
    steps = kw.get("steps") or s.get("steps") or attack.budget()["steps"]
    return steps * kw.get("n_restarts", 1) * s.get("restarts", 1), 0


def _rate(fn, images: int, repeats: int = 3) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return images / best


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def projected(gpu_tflops: float) -> None:
    import tomllib

    from robrep.attacks import suite_attacks
    from robrep.learners import create_learner
    from robrep.probes import ProbedEncoder

    cfg = tomllib.loads((ROOT / "benchmarks/paper/table1_celeba.toml").read_text())
    shape = (3, 64, 64)
    torch.manual_seed(0)
    print(f"\n2. paper table 1 on the real CelebA: {cfg['learners']}, arch {cfg['arch']}, {N_TASKS} tasks, "
          f"suites {cfg['suites']}, radii {cfg['radii']}, PGD {cfg['steps']} x {cfg['restarts']}, "
          f"{cfg['n_examples']} test points")
    print(f"   measured on this machine with {torch.get_num_threads()} thread(s)")
    # attack throughput of probe∘encoder
    learners = {name: create_learner(name, shape=shape, arch=cfg["arch"], **cfg["learner_config"][name])
                for name in cfg["learners"]}
    enc = next(iter(learners.values()))
    model = ProbedEncoder(enc, torch.nn.Linear(enc.config.latent_dim, 2)).eval().requires_grad_(False)
    x = torch.rand(250, *shape)

    def fwd_bwd():  # what an attack step costs: the gradient with respect to the input only
        xr = x.clone().requires_grad_(True)
        model(xr).logsumexp(1).sum().backward()

    def fwd():
        with torch.no_grad():
            model(x)

    fb_rate, f_rate = _rate(fwd_bwd, len(x)), _rate(fwd, len(x))
    fb_flops = _flops(fwd_bwd) / len(x)
    f_flops = _flops(fwd) / len(x)
    cpu_tflops = fb_rate * fb_flops / 1e12
    gpu_fb, gpu_f = gpu_tflops * 1e12 / fb_flops, gpu_tflops * 1e12 / f_flops
    print(f"   probe∘encoder forward+backward: {fb_flops / 1e6:.1f} MFLOP/image, {fb_rate:,.0f} images/s here "
          f"({cpu_tflops * 1e3:.0f} GFLOP/s); forward only: {f_rate:,.0f} images/s")
    print(f"   GPU assumption: {gpu_tflops:g} TFLOP/s sustained per GPU -> {gpu_fb:,.0f} forward+backward and "
          f"{gpu_f:,.0f} forward images/s, {gpu_tflops / cpu_tflops:.0f}x this machine")
    # training throughput of each learner, scaled to the GPU by the same factor as the attack workload
    factor = gpu_tflops / cpu_tflops
    train_s = {}
    for name, learner in learners.items():
        learner.requires_grad_(True)
        bs = min(learner.config.batch_size, 64)
        xb = torch.rand(bs, *shape)
        opt = torch.optim.Adam(learner.parameters(), lr=1e-4)

        def step(learner=learner, xb=xb, opt=opt):
            learner.train()
            opt.zero_grad()
            learner.loss(xb)["loss"].backward()
            opt.step()

        rate = _rate(step, bs, repeats=2)
        epochs = learner.config.epochs
        cpu = epochs * N_TRAIN / rate
        train_s[name] = (cpu, cpu / factor)
        print(f"   training {name}: {rate:,.1f} images/s here; {epochs} epochs x {N_TRAIN:,} images")
    # cells
    attacks = suite_attacks(cfg["suites"], 2, steps=cfg["steps"], restarts=cfg["restarts"], norm="linf")
    radii = [r for r in cfg["radii"] if r > 0]
    print(f"\n   {'attack':<50}{'fwd+bwd/ex':>11}{'fwd/ex':>8}{'CPU h/cell':>11}{'GPU min/cell':>13}")
    cells_cpu, cells_gpu = [], []
    for a in attacks:
        fb, f = _passes(a)
        n = cfg["n_examples"] * len(radii)
        cpu = n * (fb / fb_rate + f / f_rate)
        gpu = n * (fb / gpu_fb + f / gpu_f)
        print(f"   {a.suite + '/' + a.name:<50}{fb:>11,.0f}{f:>8,.0f}{cpu / 3600:>11.2f}{gpu / 60:>13.2f}")
        cells_cpu.append(cpu)
        cells_gpu.append(gpu)
    n_cells = len(cfg["learners"]) * N_TASKS * len(attacks)
    total_cpu = sum(cells_cpu) * len(cfg["learners"]) * N_TASKS
    train_cpu = sum(c for c, _ in train_s.values())
    train_gpu = [g for _, g in train_s.values()]
    print(f"\n   {n_cells} attack cells ({len(cfg['learners'])} learners x {N_TASKS} tasks x {len(attacks)} attacks), "
          "full budgets")
    print(f"   {'':<28}{'training':>12}{'attacks':>12}{'total':>12}")
    print(f"   {'this CPU, 1 process':<28}{train_cpu / 3600:>11.1f}h{total_cpu / 3600:>11.1f}h"
          f"{(train_cpu + total_cpu) / 3600:>11.1f}h")
    jobs = [(train_gpu[k], [g for _ in range(N_TASKS) for g in cells_gpu]) for k in range(len(cfg["learners"]))]
    print(f"   {'':<28}{'wall':>12}   (learners train on one rank each; cells start as soon as theirs is ready)")
    wall = {gpus: _schedule(jobs, gpus) for gpus in (1, 8)}
    for gpus, seconds in wall.items():
        print(f"   {f'{gpus} GPU(s) (assumed rate)':<28}{seconds / 3600:>11.2f}h")
    print(f"   8 GPUs are {wall[1] / wall[8]:.2f}x faster than 1; the slowest learner's training "
          f"({max(train_gpu) / 3600:.2f} h) stays on one rank: `torchrun ... -m robrep train` trains it on every GPU "
          "with DDP")


def _schedule(jobs: list[tuple[float, list[float]]], workers: int) -> float:
    """When the last unit ends, as robrep's counters hand them out: each free worker takes the next job to prepare
    (training first, longest first) and, when none is left, the next queued cell; a job's cells are queued, in
    order, when it is prepared."""
    free = [0.0] * workers
    heapq.heapify(free)
    queued = []
    for prep, cells in sorted(jobs, key=lambda job: -job[0]):
        start = heapq.heappop(free)
        heapq.heappush(free, start + prep)
        queued += [(start + prep, d) for d in cells]
    end = max(free)
    for ready, d in sorted(queued, key=lambda c: c[0]):  # the queue's order: by when each job was ready
        start = max(heapq.heappop(free), ready)
        heapq.heappush(free, start + d)
        end = max(end, start + d)
    return end


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-runs", action="store_true", help="only the projection")
    ap.add_argument("--threads", type=int, default=1, help="threads per process in the measured runs")
    ap.add_argument("--gpu-tflops", type=float, default=10.0, help="assumed sustained TFLOP/s of one GPU")
    args = ap.parse_args()
    if not args.skip_runs:
        measured(args.threads)
    projected(args.gpu_tflops)


if __name__ == "__main__":
    main()
