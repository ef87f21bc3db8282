"""Which loss robrep's PGD should ascend: the default bench with cross-entropy restarts only, against restarts
alternating cross-entropy and the margin (``--loss ce+margin``), at the same budget, on the same encoders,
probes and points; then ``robrep verify --margin`` on each.

    python benchmarks/pgd_loss.py [--out .robrep/pgd-loss] [--json benchmarks/results/pgd_loss.json]

Prints, per encoder and radius, the robust accuracy under each loss, the points one loss broke that the other
left robust, each run's attack seconds and each verify verdict. The encoders come from the cache (trained by the
first run if missing); each bench runs into a fresh folder under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

import robrep
from robrep.rows.masks import load_masks, masks_path
from robrep.verify import verify

LOSSES = ("ce", "ce+margin")


def run(loss: str, out: Path) -> tuple[object, float]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    rows = robrep.bench(loss=loss, out=str(out), threads=1)
    return rows, time.perf_counter() - t0


def masks(rows, out: Path) -> dict[str, object]:
    """Per learner: its (radii, N) robust mask."""
    radii = sorted(set(rows["radius"]))
    return {r["learner"]: load_masks(masks_path(out, r, radii))["robust"]
            for r in rows[rows["radius"] == 0].to_dict("records")}


def summary(seconds: dict, verdicts: dict) -> list[dict]:
    """Per loss: the bench's seconds and how many of its claims robrep verify --margin held."""
    return [{"loss": loss, "bench_seconds": round(seconds[loss], 1), "claims": len(verdicts[loss]),
             "held": sum(v["holds"] is True for v in verdicts[loss]),
             "did_not_hold": "; ".join(f"{v['learner']} at {v['radius']:g}: {v['published']:.3f} published, "
                                       f"{v['independent']:.3f} independent" for v in verdicts[loss]
                                       if v["holds"] is False) or "none"} for loss in LOSSES]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".robrep/pgd-loss"))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the benches run
    results, seconds, robust, verdicts = {}, {}, {}, {}
    for loss in LOSSES:
        out = args.out / loss.replace("+", "-")
        rows, seconds[loss] = run(loss, out)
        results[loss] = rows
        robust[loss] = masks(rows, out)
        verdicts[loss] = [{"learner": v.row["learner"], "radius": float(v.row["radius"]), "holds": v.holds,
                           "published": float(v.row["adversarial_accuracy"]), "independent": v.verified_accuracy}
                          for v in verify(out, margin=True)]
    radii = sorted(set(results["ce"]["radius"]))
    table = []
    print(f"{'learner':16} {'radius':>6} {'ce':>6} {'ce+margin':>9} {'ce only':>7} {'c+m only':>8}")
    for learner, ce in robust["ce"].items():
        both = robust["ce+margin"][learner]
        for i, radius in enumerate(radii):
            only_ce = int((~ce[i] & both[i]).sum())    # broken by ce, robust under ce+margin
            only_cm = int((ce[i] & ~both[i]).sum())
            line = {"learner": learner, "radius": radius, "ce": ce[i].float().mean().item(),
                    "ce+margin": both[i].float().mean().item(), "broken_by_ce_only": only_ce,
                    "broken_by_ce_margin_only": only_cm}
            table.append(line)
            print(f"{learner:16} {radius:6g} {line['ce']:6.3f} {line['ce+margin']:9.3f} {only_ce:7d} {only_cm:8d}")
    for loss in LOSSES:
        failed = [f"{v['learner']} at {v['radius']:g}: {v['published']:.3f} > {v['independent']:.3f}"
                  for v in verdicts[loss] if v["holds"] is False]
        print(f"--loss {loss}: bench {seconds[loss]:.1f} s (encoders cached); verify --margin: "
              f"{len(verdicts[loss]) - len(failed)} of {len(verdicts[loss])} held" + (f" ({'; '.join(failed)})" if failed else ""))
    if args.json:
        args.json.write_text(json.dumps({"command": "python benchmarks/pgd_loss.py", "rows": table,
                                         "bench_seconds": seconds, "verdicts": verdicts,
                                         "summary": summary(seconds, verdicts),
                                         "machine": platform.processor() or platform.machine()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
