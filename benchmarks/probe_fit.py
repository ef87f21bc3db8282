"""What fitting a probe costs with Newton's method (robrep's default up to ``NEWTON_MAX`` parameters) against
L-BFGS (robrep's earlier fit, kept as an option), and whether both give the same probe.

    python benchmarks/probe_fit.py [--learners vae,se-adversarial] [--epochs 30] [--fractions 1,0.1,0.01]

Trains each learner on mnist5k (its default config, ``--epochs`` epochs; nothing is saved), takes the means
of the 4,000 training digits, and fits the digit probe (10 classes) and a binary one (digit parity) on each label
fraction with both solvers, in the same process, one after the other. Prints per fit the seconds of each, the
ratio, the largest gradient entry of the raw objective at each unrounded solution, and whether the rounded probes
have the same bytes. Asserts nothing about speed (the machine is shared and noisy).
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import robrep
from robrep.checkpoint import state_bytes
from robrep.io import sha256_bytes
from robrep.harness.plan import probe_indices
from robrep.probes import features, fit_probe, train_probe


def gradient(feats, labels, weight, bias, wd=1e-4) -> float:
    w = weight.double().clone().requires_grad_(True)
    b = bias.double().clone().requires_grad_(True)
    loss = F.cross_entropy(feats.double() @ w.T + b, labels) + 0.5 * wd * (w.pow(2).sum() + b.pow(2).sum())
    loss.backward()
    return max(w.grad.abs().max().item(), b.grad.abs().max().item())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--learners", default="vae,se-adversarial")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--fractions", default="1,0.1,0.01")
    args = ap.parse_args()
    ds = robrep.load_dataset("mnist5k")
    print(f"mnist5k, {torch.get_num_threads()} threads")
    print(f"{'learner':<16}{'labels':>7}{'classes':>8}{'newton s':>10}{'lbfgs s':>9}{'ratio':>7}"
          f"{'grad newton':>13}{'grad lbfgs':>12}  same probe")
    total = {"newton": 0.0, "lbfgs": 0.0}
    for name in args.learners.split(","):
        learner = robrep.train(name, ds, epochs=args.epochs, out=False)
        feats = features(learner, ds.train.images)
        digits = ds.train.labels["digit"]
        for fraction in (float(f) for f in args.fractions.split(",")):
            seen = probe_indices(digits, fraction, 0)
            for task in (digits[seen], digits[seen] % 2):
                c = int(task.max()) + 1
                seconds, grads, shas = {}, {}, {}
                for solver in ("newton", "lbfgs"):
                    t0 = time.perf_counter()
                    probe = train_probe(feats[seen], task, c, solver=solver)
                    seconds[solver] = time.perf_counter() - t0
                    total[solver] += seconds[solver]
                    shas[solver] = sha256_bytes(state_bytes(probe))
                    grads[solver] = gradient(feats[seen], task, *fit_probe(feats[seen], task, c, solver=solver))
                print(f"{name:<16}{len(seen):>7}{c:>8}{seconds['newton']:>10.3f}{seconds['lbfgs']:>9.3f}"
                      f"{seconds['lbfgs'] / seconds['newton']:>6.1f}x{grads['newton']:>13.1e}{grads['lbfgs']:>12.1e}"
                      f"  {'yes' if shas['newton'] == shas['lbfgs'] else 'NO'}")
    print(f"all fits: newton {total['newton']:.2f} s, lbfgs {total['lbfgs']:.2f} s "
          f"({total['lbfgs'] / total['newton']:.1f}x)")


if __name__ == "__main__":
    main()
