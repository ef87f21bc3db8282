"""What the Encoder adapter costs in the attack's hot path, against calling the learner directly.

    python benchmarks/encoder_overhead.py [--n 1000] [--radius 0.03] [--steps 100] [--restarts 10] [--repeats 3]

Every attack calls probe∘encoder through ``robrep.encoders.Encoder``, which takes ``mu`` of
``(mu, logvar)``, flattens, casts and refuses non-finite features on every batch (one
reduction and one host sync per call). This trains a VAE briefly on mnist5k, fits a probe, and
times robrep's native PGD at ``--radius`` (small, so most points stay robust and every step is
taken) on the same test digits, seed and budget, through

- ``bare``: ``probe(learner.encode(x)[0])``, what the harness called before the adapter, and
- ``adapter``: ``ProbedEncoder(learner, probe)``, what it calls now,

alternating the two ``--repeats`` times, and prints the median wall seconds of each, their ratio,
and whether both found exactly the same robust points (they must: the adapter changes no number).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import robrep
from robrep.attacks import PGD
from robrep.probes import ProbedEncoder, features, train_probe


class Bare(nn.Module):
    def __init__(self, learner: nn.Module, probe: nn.Module):
        super().__init__()
        self.learner, self.probe = learner, probe

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.probe(self.learner.encode(x)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--radius", type=float, default=0.03)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ds = robrep.load_dataset("mnist5k")
    learner = robrep.train("vae", ds, out=False, max_steps=300, seed=0)
    probe = train_probe(features(learner, ds.train.images), ds.train.labels["digit"], 10)
    x, y = ds.test.batch(slice(0, args.n)), ds.test.labels["digit"][: args.n]
    models = {"bare": Bare(learner, probe).eval(), "adapter": ProbedEncoder(learner, probe)}
    attack = PGD(steps=args.steps, restarts=args.restarts)
    times: dict[str, list[float]] = {k: [] for k in models}
    robust = {}
    for _ in range(args.repeats):
        for name, model in models.items():
            t0 = time.perf_counter()
            res = attack.run(model, x, y, [args.radius], seed=0)
            times[name].append(time.perf_counter() - t0)
            robust[name] = res.robust[args.radius]
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"native PGD {args.steps} x {args.restarts} at radius {args.radius:g} on {args.n} mnist5k digits, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}:")
    for name in models:
        print(f"  {name:8s} {med[name]:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    print(f"  adapter / bare: {med['adapter'] / med['bare']:.3f}")
    same = torch.equal(robust["bare"], robust["adapter"])
    print(f"  identical robust points: {same} (adversarial accuracy {robust['adapter'].float().mean():.3f})")


if __name__ == "__main__":
    main()
