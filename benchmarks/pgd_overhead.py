"""What robrep's PGD step costs beyond the model's own forward and backward pass, by batch size.

    python benchmarks/pgd_overhead.py [--sizes 1,10,100,300,1000] [--steps 100]

Trains a VAE briefly on mnist5k and fits a probe, then, per batch size: times ``PGD.perturb`` through the
``Observer`` (guards, projection, bookkeeping, as a bench runs it) at a radius so small that no point breaks
(every step is taken), and the bare cross-entropy forward and input-gradient backward of the same model on the
same points. Prints milliseconds per step and the share that is not the model. Asserts nothing about speed.
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import robrep
from robrep.attacks import PGD
from robrep.attacks.observer import Observer
from robrep.probes import ProbedEncoder, features, train_probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,100,300,1000")
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    ds = robrep.load_dataset("mnist5k")
    learner = robrep.train("vae", ds, out=False, max_steps=300, seed=0)
    probe = train_probe(features(learner, ds.train.images), ds.train.labels["digit"], 10)
    model = ProbedEncoder(learner, probe).eval()
    x, y = ds.test.batch(slice(0, 1200)), ds.test.labels["digit"][:1200]
    keep = model.predict(x) == y  # perturb is given correctly classified points
    x, y = x[keep], y[keep]
    eps = 1e-4  # nothing breaks: every step of every point is taken
    print(f"{torch.get_num_threads()} threads, {args.steps} steps")
    for n in (min(int(s), len(x)) for s in args.sizes.split(",")):
        xs, ys = x[:n], y[:n]
        observer = Observer(model, xs, ys, eps, "linf").eval()
        t0 = time.perf_counter()
        PGD(steps=args.steps, restarts=1).perturb(observer, xs, ys, eps, torch.Generator().manual_seed(0))
        pgd = (time.perf_counter() - t0) / (args.steps + 1)
        xt = xs.clone().requires_grad_(True)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            torch.autograd.grad(F.cross_entropy(model(xt), ys, reduction="sum"), xt)
        bare = (time.perf_counter() - t0) / args.steps
        print(f"batch {n:5d}: PGD step {pgd * 1e3:7.2f} ms, bare forward + backward {bare * 1e3:7.2f} ms, "
              f"not the model {100 * (pgd - bare) / pgd:4.0f}%")


if __name__ == "__main__":
    main()
