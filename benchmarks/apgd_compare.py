"""robrep's batched targeted attacks against torchattacks', as the standard protocol's cascade runs them inside
AutoAttack: APGD-T (``--attack apgd-t``, the default) or FAB-T (``--attack fab-t``), on the points every stage
before AutoAttack left robust, per encoder and radius of finished standard runs.

    python benchmarks/apgd_compare.py leaderboard-runs/std-mnist5k-linf [RUN ...] [--attack fab-t]
                                      [--learners vae,se-random] [--json FILE]

For each claim (run, task with four classes or more, standard probe) and radius: the points robust after every
stage of the run's cascade that comes before AutoAttack (the AND of those stages' masks), attacked by
torchattacks' version (100 iterations, one restart, the task's classes less one as targets: AutoAttack's standard
part) and by robrep's (``robrep.attacks.apgd``, ``robrep.attacks.fab``: the same algorithm and budget, every
target of a point in one batch), each through ``Attack.run`` (the Observer, the guards, the decision re-computed),
one after the other in this process. Prints seconds, their ratio, the points each broke, and the points only one
of them broke: robrep's version must break every point torchattacks' breaks (APGD-T: up to what different random
starts decide; FAB-T has no random start, so the two must agree point for point).
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
from robrep.attacks.apgd import APGD  # noqa: E402
from robrep.attacks.external import TorchattacksAttack  # noqa: E402
from robrep.attacks.fab import FAB  # noqa: E402
from robrep.data import load_dataset  # noqa: E402
from robrep.harness.plan import claim_points  # noqa: E402
from robrep.rows.files import read_results  # noqa: E402
from robrep.rows.masks import attacked_robust  # noqa: E402
from robrep.verify import attacked_model  # noqa: E402


def before_autoattack(folder: Path, rows, first, radii) -> torch.Tensor:
    """(n_radii, N): robust after every cascade stage that runs before AutoAttack (all but it and Square)."""
    return attacked_robust(folder, rows, first, radii,
                           attacks=lambda name: not (name.startswith("AutoAttack") or name == "Square"))


def pair(attack: str, n_classes: int, norm: str):
    """(torchattacks' version, robrep's) of AutoAttack's targeted part ``attack`` at the standard budget."""
    if attack == "fab-t":
        kwargs = {"multi_targeted": True, "n_classes": n_classes, "steps": 100, "n_restarts": 1}
        return (TorchattacksAttack("FAB", kwargs, norm=norm, label="FAB-T"),
                FAB(steps=100, n_targets=n_classes - 1, norm=norm))
    return (TorchattacksAttack("APGDT", {"steps": 100, "n_restarts": 1, "n_classes": n_classes}, norm=norm,
                               label="APGD-T"),
            APGD(steps=100, loss="dlr-targeted", n_targets=n_classes - 1, norm=norm))


def compare(folder: Path, learners: set[str] | None, attack: str = "apgd-t") -> list[dict]:
    df = read_results(folder / "results.csv")
    df = df[df["probe"] == "standard"] if "probe" in df else df
    out = []
    for (run, task), rows in df.groupby(["run", "task"], sort=True):
        first = rows.iloc[0]
        n_classes = int(first["n_classes"])
        if n_classes < 4 or (learners and first["learner"] not in learners):
            continue
        radii = sorted(set(rows["radius"]))
        model = attacked_model(folder, first, str(first["checkpoint"]), "cpu")
        ds = load_dataset(first["dataset"])
        _, x, y = claim_points(ds, first)
        entering = before_autoattack(folder, rows, first, radii)
        for i, eps in enumerate(radii):
            sel = entering[i].nonzero().squeeze(1)
            if eps == 0 or not len(sel):
                continue
            line = {"run": run, "learner": first["learner"], "task": task, "attack": attack, "radius": eps,
                    "points": len(sel)}
            broken = {}
            for name, method in zip(("torchattacks", "robrep"), pair(attack, n_classes, first["norm"])):
                t0 = time.perf_counter()
                res = method.run(model, x[sel], y[sel], [0.0, eps], seed=int(first["seed"]))
                line[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
                broken[name] = ~res.robust[eps]
                line[f"{name}_broken"] = int(broken[name].sum())
            line["only_torchattacks"] = int((broken["torchattacks"] & ~broken["robrep"]).sum())
            line["only_robrep"] = int((broken["robrep"] & ~broken["torchattacks"]).sum())
            out.append(line)
            print(f"{first['learner']:16} {task:6} {eps:5g}  {len(sel):4d} points  torchattacks "
                  f"{line['torchattacks_seconds']:6.1f} s broke {line['torchattacks_broken']:3d}  robrep "
                  f"{line['robrep_seconds']:6.1f} s broke {line['robrep_broken']:3d}  "
                  f"(x{line['torchattacks_seconds'] / max(line['robrep_seconds'], 1e-9):.2f})  only torchattacks "
                  f"{line['only_torchattacks']}  only robrep {line['only_robrep']}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--attack", choices=("apgd-t", "fab-t"), default="apgd-t")
    ap.add_argument("--learners", help="only these learners (comma-separated)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    learners = set(args.learners.split(",")) if args.learners else None
    lines = [line for folder in args.runs for line in compare(folder, learners, args.attack)]
    ta, rr = sum(x["torchattacks_seconds"] for x in lines), sum(x["robrep_seconds"] for x in lines)
    print(f"\n{len(lines)} cells: torchattacks {ta:.0f} s, robrep {rr:.0f} s (x{ta / max(rr, 1e-9):.2f}); points "
          f"broken by torchattacks only {sum(x['only_torchattacks'] for x in lines)}, by robrep only "
          f"{sum(x['only_robrep'] for x in lines)}")
    if args.json:
        from robrep.provenance import machine

        args.json.write_text(json.dumps({"command": command(), "cells": lines, "machine": machine("cpu"),
                                         "python": platform.python_version(), "torch": torch.__version__,
                                         "date": time.strftime("%Y-%m-%d")}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
