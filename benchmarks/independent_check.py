"""Re-attack published results with an independent implementation (torchattacks' PGD).

    python benchmarks/independent_check.py RESULTS_DIR [--restarts 10] [--steps 100]

For every (run, task) of RESULTS_DIR/results.csv with the native L-inf suite, loads the saved
encoder (checkpoint SHA-256 verified) and probe (SHA-256 compared with the row), attacks the
same test points with torchattacks.PGD (random start, same steps and step size, restarts run as
separate seeded calls; a point is robust only if every restart's final iterate is classified
correctly) and prints both accuracies. If the independent attack finds the published accuracy
too high (by more than one test point in a hundred), the line says so.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torchattacks

import robrep
from robrep.harness import test_indices
from robrep.checkpoint import sha256_bytes
from robrep.probes import ProbedEncoder, freeze, load_probe, probe_file
from robrep.results import read_results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=10)
    args = ap.parse_args()
    df = read_results(args.results / "results.csv")
    df = df[(df["suite"] == "native") & (df["norm"] == "linf")]
    worst = 0.0
    print(f"{'run':40s} {'task':8s} {'radius':>6s} {'robrep':>7s} {'torchattacks':>12s}")
    for (run, dataset, task, fraction), rows in df.groupby(["run", "dataset", "task", "label_fraction"]):
        first = rows.iloc[0]
        if not isinstance(first["checkpoint"], str) or not first["checkpoint"]:
            # an encoder robrep did not train (a module, module:attr, plugin) has no checkpoint to reload
            print(f"{run:40s} {task:8s} skipped: no checkpoint ({first.get('source', '')})")
            continue
        learner = freeze(robrep.load(first["checkpoint"]))
        probe_path = probe_file(args.results, run, dataset, task, float(fraction))
        if sha256_bytes(probe_path.read_bytes()) != first["probe_sha256"]:
            raise SystemExit(f"{probe_path} does not match the probe_sha256 of its rows")
        model = ProbedEncoder(learner, load_probe(probe_path.read_bytes()))
        ds = robrep.load_dataset(dataset)
        idx = test_indices(len(ds.test), int(first["n_examples"]), int(first["seed"]))
        x, y = ds.test.batch(idx), ds.test.labels[task][idx]
        for _, row in rows.sort_values("radius").iterrows():
            eps = float(row["radius"])
            robust = model.predict(x) == y
            if eps > 0:
                atk = torchattacks.PGD(model, eps=eps, alpha=2.5 * eps / args.steps, steps=args.steps, random_start=True)
                for r in range(args.restarts):
                    torch.manual_seed(10_000 + r)  # torchattacks draws its random start from torch's global RNG
                    adv = atk(x, y)
                    robust &= model.predict(adv) == y
            acc = robust.float().mean().item()
            gap = row["adversarial_accuracy"] - acc
            worst = max(worst, gap)
            flag = "  <-- published accuracy too high" if gap > 0.01 else ""
            print(f"{run:40s} {task:8s} {eps:6.3f} {row['adversarial_accuracy']:7.3f} {acc:12.3f}{flag}")
    print(f"largest amount by which the published accuracy exceeds the independent attack's: {worst:+.3f}")
    return 1 if worst > 0.01 else 0


if __name__ == "__main__":
    sys.exit(main())
