"""The tasks of one encoder attacked one at a time and stacked into one pass (``robrep.attacks.stacked``, ``robrep
bench --stack-tasks``): seconds, encoder passes and rows per pass, and whether every task got the same answer.

    python benchmarks/stacked_cells.py [--tasks 17] [--arch mlp|conv] [--device cuda] [--n-examples 500]
                                       [--steps 100] [--restarts 2] [--json FILE]

One encoder (a VAE trained briefly on the embedded digits; ``--arch``), ``--tasks`` linear probes on it (the digit,
then "is it digit k" and "is it at least k": binary tasks, as CelebA's 17 attributes are), robrep's PGD at the
L-inf radii 0.05 and 0.1 on ``--n-examples`` test digits, first task by task (``Attack.run``, as ``robrep bench``
runs cells), then all tasks in one stacked pass, in this process, one after the other. On a GPU an MLP cell of
500 points is a few small kernels per step, so the device waits on launches: the stacked pass makes one encoder
pass per step for every task (``--tasks`` times fewer launches). On a CPU the work is the same either way, and so
should the seconds be.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from script_command import command  # noqa: E402

import robrep  # noqa: E402
from robrep.attacks.pgd import PGD  # noqa: E402
from robrep.attacks.stacked import Cell, run_stacked, stack_rows  # noqa: E402
from robrep.data import load_dataset  # noqa: E402
from robrep.encoders.adapter import as_encoder  # noqa: E402
from robrep.probes import ProbedEncoder, features, train_probe  # noqa: E402

RADII = [0.0, 0.05, 0.1]


def task_labels(digits: torch.Tensor, n: int) -> list[tuple[str, torch.Tensor, int]]:
    """``n`` tasks on the digit labels: the digit itself, then binary ones ("is k", then "at least k")."""
    tasks = [("digit", digits, 10)]
    tasks += [(f"is-{k}", (digits == k).long(), 2) for k in range(10)]
    tasks += [(f"at-least-{k}", (digits >= k).long(), 2) for k in range(1, 10)]
    if n > len(tasks):
        raise SystemExit(f"--tasks: at most {len(tasks)}")
    return tasks[:n]


def synced(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=17)
    ap.add_argument("--arch", default="mlp", choices=("mlp", "conv"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-examples", type=int, default=500)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    device = torch.device(args.device)

    ds = load_dataset("mnist5k")
    learner = robrep.train("vae", ds, out=False, max_steps=200, seed=0, arch=args.arch)
    encoder = as_encoder(learner).to(device)
    feats = features(encoder, ds.train.images.to(device))
    x = ds.test.batch(slice(0, args.n_examples)).to(device)
    digits = ds.test.labels["digit"][:args.n_examples]
    cells = []
    for name, train_labels, k in task_labels(ds.train.labels["digit"], args.tasks):
        probe = train_probe(feats, train_labels.to(device), k)
        test = task_labels(digits, args.tasks)[len(cells)][1]
        cells.append(Cell(ProbedEncoder(encoder, probe.to(device)), x, test.to(device)))

    passes = {"n": 0, "rows": 0}

    def count(module, inputs, output):
        passes["n"] += 1
        passes["rows"] += len(inputs[0])

    max_rows = stack_rows(encoder, x, 1000)  # measured before the hook: its two small passes are not counted
    hook = encoder.register_forward_hook(count)
    attack = PGD(steps=args.steps, restarts=args.restarts)
    measured = {}
    for mode in ("one at a time", "stacked"):
        passes.update(n=0, rows=0)
        t0 = synced(device)
        if mode == "stacked":
            results = run_stacked(attack, cells, RADII, seed=0, max_rows=max_rows)
        else:
            results = [attack.run(c.model, c.x, c.y, RADII, seed=0) for c in cells]
        seconds = synced(device) - t0
        measured[mode] = {"seconds": seconds, "encoder_passes": passes["n"],
                          "rows_per_pass": passes["rows"] / max(1, passes["n"]), "results": results}
    hook.remove()
    alone, stacked = measured["one at a time"]["results"], measured["stacked"]["results"]
    same = all(torch.equal(a.robust[r], b.robust[r]) and torch.equal(a.late[r], b.late[r])
               for a, b in zip(alone, stacked) for r in RADII)
    print(f"{args.tasks} tasks on one {args.arch.upper()} encoder, {args.n_examples} points, robrep's PGD "
          f"{args.steps} x {args.restarts}, radii {RADII[1:]}, {device} ({platform.processor() or platform.machine()},"
          f" {torch.get_num_threads()} threads)")
    print(f"{'':15s} {'seconds':>9s} {'encoder passes':>15s} {'rows per pass':>14s}")
    for mode, m in measured.items():
        print(f"{mode:15s} {m['seconds']:9.2f} {m['encoder_passes']:15d} {m['rows_per_pass']:14.1f}")
    ratio = measured["one at a time"]["seconds"] / measured["stacked"]["seconds"]
    print(f"stacked: {ratio:.2f}x; every task the same robust and late points: {same}")
    if args.json:
        out = {"command": command(), "device": str(device), "threads": torch.get_num_threads(),
               "same_points": same, "speedup": ratio,
               **{mode: {k: v for k, v in m.items() if k != "results"} for mode, m in measured.items()}}
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
