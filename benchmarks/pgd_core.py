"""robrep's PGD against the matrix-product floor, and against robrep at another git revision in the same run.

    python benchmarks/pgd_core.py [--against REV] [--rounds 2] [--n-examples 1000] [--json FILE]

Per encoder (the default VAE and the adversarial SE on mnist5k, MLP; the SE's ConvNet too), on ``--n-examples``
test digits, one thread:

- ``floor``: the float32 throughput of the attack's largest matrix product (``bench_default.gemm_gflops``);
- ``raw``: the encoder's own forward and input-gradient pass on the cross-entropy, nothing else, as a share of
  the floor (what no attack loop can beat);
- ``every step``: PGD with ``reuse=False`` at radius 0.05 (every point, every step), as a share of the floor
  (the ConvNet also with plain ``nn.Conv2d`` layers in place of ``robrep.fastconv``'s: the alternative);
- ``robust``: PGD with its reuse at radius 0.002, where almost every point stays robust (the steps an attack
  spends on the points that stay robust, the protocol's cost), as a share of the floor;
- ``protocol``: PGD 100 x 10 with its reuse at radii 0.05, 0.1, 0.2 (the board's attack): seconds and the
  points broken, per radius.

With ``--against REV`` the same measurements run with robrep at git revision REV (checked out into a temporary
worktree, imported in a subprocess), alternating with this tree for ``--rounds`` rounds, so that both see the
same machine: per measurement the median of each side, their ratio, and whether the ``protocol`` attack broke
the same points (the broken points per radius must agree: a faster loop that breaks fewer points is weaker).
Prints the table; asserts nothing (timings on a shared machine are noisy: compare within one run).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
RADII = (0.05, 0.1, 0.2)


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    """Forward multiply-adds per point of ``model`` on x (Linear and Conv layers)."""
    total = [0]

    def hook(m, inp, out):
        if isinstance(m, nn.Linear):
            total[0] += m.in_features * m.out_features
        elif isinstance(m, nn.Conv2d):
            total[0] += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.ConvTranspose2d):
            total[0] += inp[0][0].numel() * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x[:1])
    for h in handles:
        h.remove()
    return total[0]


def _plain_convs(learner):
    """A copy of ``learner`` whose InputGradConv2d layers are plain nn.Conv2d (the same weights)."""
    import copy

    from robrep.fastconv import InputGradConv2d

    plain = copy.deepcopy(learner)
    for module in list(plain.modules()):
        for name, child in module.named_children():
            if isinstance(child, InputGradConv2d):
                conv = nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size, child.stride, child.padding)
                conv.load_state_dict(child.state_dict())
                setattr(module, name, conv.requires_grad_(False))
    return plain


def _models(n: int):
    """(label, model, x, labels) per encoder measured: the default checkpoints (trained first if not cached) and
    a ConvNet SE of one training step (its throughput is what is measured, not its robustness)."""
    from protocol_cost import _default_model

    import robrep
    from robrep.probes import ProbedEncoder, features, train_probe

    for learner in ("vae", "se-adversarial"):
        model, x, y = _default_model(learner)
        yield f"{learner} mlp", model.eval(), x[:n], y[:n]
    ds = robrep.load_dataset("mnist5k")
    conv = robrep.train("se-adversarial", ds, out=False, max_steps=1, seed=0, arch="conv")
    probe = train_probe(features(conv, ds.train.images[:500]), ds.train.labels["digit"][:500], 10)
    model = ProbedEncoder(conv, probe).eval()
    x = ds.test.batch(slice(0, n))
    yield "se-adversarial conv (1 step)", model, x, model.predict(x)
    # the alternative to robrep.fastconv's convolutions in the same run: torch's own convolution backward
    yield "  the same, nn.Conv2d", ProbedEncoder(_plain_convs(conv), probe).eval(), x, model.predict(x)


def measure(n: int) -> dict:
    """Every measurement of the module docstring with the robrep this process imports."""
    from bench_default import gemm_gflops

    from robrep.attacks import PGD

    torch.set_num_threads(1)
    floor = gemm_gflops() * 1e9 / 2  # multiply-adds per second
    import robrep

    out = {"floor_gmacs": floor / 1e9, "robrep": str(Path(robrep.__file__).parent.parent), "models": {}}
    for label, model, x, y in _models(n):
        macs = _macs(model, x)
        steps = 100 if "mlp" in label else 20  # long enough to time: a few seconds each
        own = model.predict(x)  # every point attacked, whatever the encoder's accuracy
        t0 = time.perf_counter()
        for _ in range(steps):
            xt = x.clone().requires_grad_(True)
            torch.autograd.grad(torch.nn.functional.cross_entropy(model(xt), own, reduction="sum"), xt)
        row = {"raw": len(x) * macs * 2 * steps / (time.perf_counter() - t0) / floor}
        for name, eps, reuse in (("every step", 0.05, False), ("robust", 0.002, True)):
            t0 = time.perf_counter()
            res = PGD(steps=steps, restarts=1, reuse=reuse).run(model, x, own, [eps], seed=0)
            work = res.attacked[eps] * macs * (2 * steps + 1)  # the attacked points, every step
            row[name] = work / (time.perf_counter() - t0) / floor
        if "mlp" in label:
            t0 = time.perf_counter()
            res = PGD(steps=100, restarts=10).run(model, x, y, list(RADII), seed=0)
            row["protocol_seconds"] = time.perf_counter() - t0
            row["protocol_broken"] = {str(r): (~res.robust[r]).nonzero().flatten().tolist() for r in RADII}
        out["models"][label] = row
    return out


def _worker(tree: Path, n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=f"{tree}{os.pathsep}{HERE}", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(HERE / "pgd_core.py"), "--worker", str(n)], env=env, cwd=tree,
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--against", default=None, metavar="REV")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--n-examples", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:  # one side of a comparison: the JSON on the last line
        print(json.dumps(measure(args.worker)))
        return
    from revision import checked_out

    sides = {"this tree": HERE.parent}
    with checked_out(args.against) if args.against else contextlib.nullcontext() as old:
        if args.against:
            sides[args.against] = old
        runs = {side: [] for side in sides}
        for _ in range(args.rounds if args.against else 1):
            for side, tree in sides.items():
                runs[side].append(_worker(tree, args.n_examples))
    report(runs, args)


def report(runs: dict, args) -> None:
    def med(side, model, key):
        return statistics.median(r["models"][model][key] for r in runs[side])

    sides = list(runs)
    for s in sides:
        print(f"{s}: robrep from {runs[s][0]['robrep']}")
    print("floor (median): " + ", ".join(f"{s}: {statistics.median(r['floor_gmacs'] for r in runs[s]):.1f} "
                                          "G multiply-adds/s" for s in sides))
    table = {}
    for model in runs[sides[0]][0]["models"]:
        keys = [k for k in ("raw", "every step", "robust", "protocol_seconds") if k in runs[sides[0]][0]["models"][model]]
        for key in keys:
            values = [med(s, model, key) for s in sides]
            cells = "  ".join(f"{s}: {v:.0%}" if key != "protocol_seconds" else f"{s}: {v:.1f} s"
                              for s, v in zip(sides, values))
            # this tree against the other: its share of the floor over theirs, their seconds over its own
            ratio = "" if len(values) < 2 else f"  (this tree {values[0] / values[1]:.2f}x)" if key != \
                "protocol_seconds" else f"  (this tree {values[1] / values[0]:.2f}x faster)"
            print(f"{model:30s} {key:17s} {cells}{ratio}")
            table[f"{model} / {key}"] = dict(zip(sides, values))
        if "protocol_broken" in runs[sides[0]][0]["models"][model]:
            broken = [r["models"][model]["protocol_broken"] for s in sides for r in runs[s]]
            same = all(b == broken[0] for b in broken)
            counts = ", ".join(f"{r}: {len(broken[0][str(r)])}" for r in RADII)
            print(f"{model:30s} {'points broken':17s} {counts} per radius; the same points in every run: {same}")
            table[f"{model} / same points broken"] = same
    if args.json:
        from script_command import command
        args.json.write_text(json.dumps({"command": command(), "machine": platform.machine(), "threads": 1,
                                         "rounds": len(runs[sides[0]]), "table": table}, indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
