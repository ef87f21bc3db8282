"""What the Smooth Encoder's selection costs in training, as a multiple of the VAE's, measured in one process.

    python benchmarks/selection_cost.py [--steps 60] [--rounds 3] [--threads 2] [--arch mlp,conv]

For each architecture, on mnist5k's training digits (minibatches of 128): the VAE, ``se-fgsm`` (one
FGSM-RS selection step), the default SE (one step from the last visit's point, as ``se-warm``), and the
paper's SE with L = 20 from a random start. Each learner trains ``--steps`` steps after two warm-up steps; the learners take turns for
``--rounds`` rounds, so a slower or busier stretch of the machine hits all of them, and the median per
learner is reported. Prints milliseconds per step and the ratio to the VAE in the same run (the issue's
target for cheap selection: at most 2x). The bench rows' ``train_seconds`` are whole trainings, but
each one ran at its own time; these ratios come from one process, side by side.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import robrep

LEARNERS = (("vae", "vae", {}), ("se-fgsm, 1 FGSM-RS step", "se-fgsm", {}),
            ("SE default, 1 warm step", "se-adversarial", {}),
            ("SE, L = 20 (paper)", "se-adversarial", {"selection_steps": 20, "selection_start": "random"}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", default="mlp,conv")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = robrep.load_dataset("mnist5k")
    print(f"mnist5k, {len(ds.train):,} training digits, minibatch 128, {args.steps} steps x {args.rounds} rounds, "
          f"{args.threads} thread(s)\n")
    for arch in args.arch.split(","):
        times = {label: [] for label, _, _ in LEARNERS}
        for _ in range(args.rounds):
            for label, learner, cfg in LEARNERS:
                robrep.train(learner, ds, out=False, max_steps=2, seed=0, arch=arch, **cfg)
                t0 = time.perf_counter()
                robrep.train(learner, ds, out=False, max_steps=args.steps, seed=0, arch=arch, **cfg)
                times[label].append((time.perf_counter() - t0) / args.steps)
        vae = statistics.median(times["vae"])
        print(f"{arch}:")
        for label, ts in times.items():
            m = statistics.median(ts)
            print(f"  {label:32s} {m * 1000:7.1f} ms/step  {m / vae:5.2f}x the VAE   "
                  f"(rounds: {', '.join(f'{t * 1000:.0f}' for t in ts)})")
        print()


if __name__ == "__main__":
    main()
