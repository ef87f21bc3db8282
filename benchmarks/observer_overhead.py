"""What the Observer (the evidence behind the checks) costs an attack, against the bare model.

    python benchmarks/observer_overhead.py [--n 500] [--radius 0.03] [--steps 100] [--restarts 10] [--repeats 3]

Every attack is given the model wrapped in ``robrep.attacks.base.Observer``, which matches each
queried input to the point whose ball holds it (``Observer.match``) and
records how far the queries went and when a point first broke. This trains a VAE briefly on
mnist5k, fits a probe, and times ``perturb`` at ``--radius`` (small, so most points stay robust
and the whole budget is spent) on the same digits and seed, for robrep's native PGD (one forward
and one backward per query batch) and torchattacks' Square (forward-only queries, the Observer's
worst case relative to the work), and AutoAttack's targeted parts (APGD-T and FAB-T, 9 targets x
``--steps``) on ``--tail`` points, as a cascade leaves them to it (few points: the Observer's fixed cost
per call counts most), with the bare model and with the Observer, alternating
``--repeats`` times. Prints the median wall seconds, their ratio, and whether both broke exactly
the same points (they must: the Observer returns the model's logits unchanged).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import robrep
from robrep.attacks import PGD
from robrep.attacks.observer import Observer
from robrep.attacks.external import TorchattacksAttack
from robrep.probes import ProbedEncoder, features, train_probe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=10)
    ap.add_argument("--queries", type=int, default=1000, help="Square's query budget")
    ap.add_argument("--radius", type=float, default=0.03)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tail", type=int, default=10, help="points left to AutoAttack's targeted parts")
    args = ap.parse_args()
    ds = robrep.load_dataset("mnist5k")
    learner = robrep.train("vae", ds, out=False, max_steps=300, seed=0)
    probe = train_probe(features(learner, ds.train.images), ds.train.labels["digit"], 10)
    model = ProbedEncoder(learner, probe)
    x, y = ds.test.batch(slice(0, args.n)), ds.test.labels["digit"][: args.n]
    keep = model.predict(x) == y  # perturb is given correctly classified points
    x, y = x[keep], y[keep]
    parts = [["APGDT", {"n_classes": 10, "n_restarts": 1, "steps": args.steps}],
             ["FAB", {"multi_targeted": True, "n_classes": 10, "n_restarts": 1, "steps": args.steps}]]
    attacks = {"native PGD": (PGD(steps=args.steps, restarts=args.restarts), len(x)),
               "torchattacks Square": (TorchattacksAttack("Square", {"n_queries": args.queries, "n_restarts": 1},
                                                          kind="black-box"), len(x)),
               "APGD-T + FAB-T": (TorchattacksAttack("Parts", {"parts": parts}), args.tail)}
    print(f"radius {args.radius:g}, {len(x)} correctly classified mnist5k digits, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}:")
    for label, (attack, n) in attacks.items():
        xs, ys = x[:n], y[:n]
        times: dict[str, list[float]] = {"bare": [], "observer": []}
        broken = {}
        for _ in range(args.repeats):
            for name in times:
                seen = Observer(model, xs, ys, args.radius, attack.norm).eval() if name == "observer" else model
                gen = torch.Generator().manual_seed(0)
                t0 = time.perf_counter()
                out = attack.perturb(seen, xs, ys, args.radius, gen)
                times[name].append(time.perf_counter() - t0)
                broken[name] = out[0]
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"  {label:20s} bare {med['bare']:7.2f} s, observer {med['observer']:7.2f} s, "
              f"observer / bare {med['observer'] / med['bare']:.3f}; same points broken: "
              f"{torch.equal(broken['bare'], broken['observer'])} ({int(broken['bare'].sum())} of {n})")


if __name__ == "__main__":
    main()
