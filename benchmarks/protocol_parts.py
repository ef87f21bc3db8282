"""Where a standard board protocol's time goes, per part: seconds per attack and radius, the points entering each
stage of the cascade, and each part's share of the machine's matrix-product floor.

    python benchmarks/protocol_parts.py [--protocol mnist5k-linf] [--learners vae,se-random,se-adversarial]
                                        [--n-examples N] [--arch mlp] [--device cpu] [--json FILE]

Runs the protocol (``robrep.bench`` with the protocol's fields; with ``--n-examples`` other than the protocol's,
as a non-standard run of the same attacks) on each learner, one at a time, from the cached checkpoints (trained
first if missing), into a temporary folder, while counting per attack stage and radius:

- seconds (the stage's attack calls, the checks of its result included);
- points entering the stage (the cascade gives each stage the points every earlier one left robust) and the
  points it broke first;
- model queries: input points through probe∘encoder, and backward passes through it (points x passes: FAB
  takes one per class of a query);
- floor share: the stage's matrix-product work (the model's forward FLOPs per point, counted once with torch's
  own formulas, times the forward queries, plus as much again per gradient query: the weights are frozen, so the
  backward pass computes input gradients only, about one forward's work) at the measured float32 throughput of
  the attack's largest layer, as a share of the stage's seconds. 100 % would be an attack that does nothing but
  the model's matrix products.

Training, probe fitting and the stages' own bookkeeping outside the attack calls are in "other". Prints the
table; asserts nothing (timings on a shared machine are noisy: compare parts within one run).
"""
from __future__ import annotations

import argparse
import collections
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_default import flop_counter, gemm_gflops  # noqa: E402
from script_command import command  # noqa: E402

FIG7 = ("vae", "se-random", "se-adversarial")  # figure 7's encoders, the yardstick of the protocol's cost


class Counter:
    """Per (learner, task, attack, radius): seconds, points entering, points broken first, forward and gradient
    queries; and each model's forward FLOPs per point."""

    def __init__(self):
        self.cells = collections.defaultdict(lambda: collections.Counter())
        self.stage = None  # the (attack, radius) being run
        self.flops_per_point = {}  # id(model) -> FLOPs of one point's forward

    def install(self):
        """Patch the attack base class and the Observer (the model every attack is given) to count."""
        from robrep.attacks import base, observer

        counter = self
        part, forward = base.Attack._attack_part, observer.Observer.forward

        def _attack_part(attack, loop, idx, eps, progress):
            key = (attack.name, float(eps))
            counter.stage = (key, loop.model)
            t0 = time.perf_counter()
            robust = loop.robust
            before = int(robust[idx].sum())
            try:
                return part(attack, loop, idx, eps, progress)
            finally:
                cell = counter.cells[key]
                cell["seconds"] += time.perf_counter() - t0
                cell["entering"] += len(idx)
                cell["broken"] += before - int(robust[idx].sum())
                counter.stage = None

        def observed_forward(obs, q):
            if counter.stage is not None:
                key, model = counter.stage
                cell = counter.cells[key]
                cell["forward"] += len(q)
                if id(model) not in counter.flops_per_point:
                    counter.flops_per_point[id(model)] = counter.model_flops(model, q[:1].detach())
                cell["model"] = id(model)
                out = forward(obs, q)
                if out.requires_grad:  # each backward pass through it (FAB takes one per class), as it happens
                    n = len(q)
                    out.register_hook(lambda g: cell.update(gradient=n) or g)
                return out
            return forward(obs, q)

        base.Attack._attack_part = _attack_part
        observer.Observer.forward = observed_forward

    @staticmethod
    def model_flops(model, x) -> float:
        with torch.no_grad(), flop_counter() as counted:
            model(x)
        return float(counted.flops)

    def take(self):
        cells, self.cells = dict(self.cells), collections.defaultdict(lambda: collections.Counter())
        return cells


def run(learner: str, args, counter: Counter, work: Path):
    """The protocol on one learner (trained first, outside the count, if its checkpoint is missing): its rows,
    the bench's wall seconds, and the counted cells."""
    import robrep
    from robrep.protocols import protocol

    proto = protocol(args.protocol)
    fields = {"protocol": args.protocol}
    if args.n_examples and args.n_examples != proto.n_examples:  # a non-standard run of the same attacks
        fields = {**proto.bench_fields(), "n_examples": args.n_examples}
    robrep.train(learner, proto.dataset, seed=proto.seed, arch=args.arch)  # cached: outside the timed run
    counter.take()
    t0 = time.perf_counter()
    df = robrep.bench(**fields, learners=[learner], arch=args.arch, threads=args.threads, device=args.device,
                      out=str(work / learner))
    return df, time.perf_counter() - t0, counter.take()


def table(learner, df, wall, cells, flops_per_point, gflops) -> list[dict]:
    """One line per attack stage (cascade order) and radius, with its totals; prints it."""
    own = df[df["suite"] != "worst-case"]
    order = list(dict.fromkeys(own.sort_values("timestamp", kind="stable")["attack"]))
    lines = []
    print(f"\n{learner}: {wall:.1f} s in all; attacks {sum(c['seconds'] for c in cells.values()):.1f} s "
          f"(matrix products at {gflops:.0f} GFLOP/s)")
    print(f"  {'attack':44s} {'radius':>6s} {'in':>5s} {'broke':>5s} {'seconds':>8s} {'share':>6s} "
          f"{'queries':>9s} {'grads':>9s} {'floor':>6s}")
    for attack in order:
        keys = sorted(k for k in cells if k[0] == attack)
        total = collections.Counter()
        for key in keys + [None]:
            c = cells[key] if key is not None else total
            if key is not None:
                total.update({k: v for k, v in c.items() if k != "model"})
                fpp = flops_per_point.get(c.get("model"), 0.0)
                c["flops"] = fpp * (c["forward"] + c["gradient"])
                total["flops"] += c["flops"]
            floor = c["flops"] / (gflops * 1e9) / c["seconds"] if c["seconds"] else 0.0
            name = attack[:44] if key is not None and key == keys[0] else ""
            radius = f"{key[1]:g}" if key is not None else "all"
            if key is None and len(keys) < 2:
                continue
            share = c["seconds"] / max(wall, 1e-9)
            print(f"  {name:44s} {radius:>6s} {c['entering']:5d} {c['broken']:5d} {c['seconds']:8.1f} {share:6.1%} "
                  f"{c['forward']:9d} {c['gradient']:9d} {floor:6.1%}")
            lines.append({"learner": learner, "attack": attack, "radius": radius, "entering": c["entering"],
                          "broken": c["broken"], "seconds": round(c["seconds"], 2), "forward": c["forward"],
                          "gradient": c["gradient"], "floor_share": round(floor, 4)})
    rest = wall - sum(c["seconds"] for c in cells.values())
    print(f"  {'other (probe fit, checks, bookkeeping, rows)':44s} {'':>6s} {'':>5s} {'':>5s} {rest:8.1f} "
          f"{rest / max(wall, 1e-9):6.1%}")
    lines.append({"learner": learner, "attack": "other", "seconds": round(rest, 2)})
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", default="mnist5k-linf")
    ap.add_argument("--learners", default=",".join(FIG7))
    ap.add_argument("--arch", default="mlp")
    ap.add_argument("--n-examples", type=int, help="test points (default: the protocol's; other counts make a "
                    "non-standard run of the same attacks)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (the floor is then the GPU's matrix products)")
    ap.add_argument("--json", type=Path, help="also write the table here")
    args = ap.parse_args()

    counter = Counter()
    counter.install()
    work = Path(tempfile.mkdtemp(prefix="robrep-protocol-parts-"))
    torch.set_num_threads(args.threads)
    lines, walls = [], {}
    for learner in args.learners.split(","):
        before = gemm_gflops(args.device)
        df, wall, cells = run(learner, args, counter, work)
        gflops = (before + gemm_gflops(args.device)) / 2
        walls[learner] = round(wall, 1)
        lines += table(learner, df, wall, cells, counter.flops_per_point, gflops)
    print(f"\nin all: {sum(walls.values()):.1f} s ({', '.join(f'{k} {v:.0f} s' for k, v in walls.items())})")
    if args.json:
        from robrep.provenance import machine

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": command(), "protocol": args.protocol, "device": args.device, "n_examples": args.n_examples, "threads": args.threads,
            "wall_seconds": walls, "parts": lines, "machine": machine(args.device), "python": platform.python_version(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
