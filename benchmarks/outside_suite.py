"""The standard protocol against an attack suite written outside robrep: IBM's Adversarial Robustness Toolbox
(ART: APGD on the cross-entropy, APGD on the DLR margin, DeepFool), on the same encoders, probes and test points.

    pip install adversarial-robustness-toolbox
    python benchmarks/outside_suite.py leaderboard-runs/std-mnist5k-linf [RUN ...] [--json FILE]

For every encoder and radius of each standard run folder (``robrep bench --protocol NAME``): the protocol's
worst case (from the per-point masks of its attacks), ART's worst case over its three attacks, and per point
the test points ART broke that the protocol called robust (and the reverse). A point counts as broken by ART
only if its adversarial input lies in the ball and the input bounds and the probe misclassifies it (robrep's
admissibility test, ``robrep.attacks.geometry.admissible``); DeepFool's minimal L2 step, which can leave the
ball, is projected back into it first. ART's APGD runs its published algorithm (Croce and Hein 2020) at
100 iterations with 5 random starts, initial step 2 x radius.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import torch

from robrep.attacks.geometry import admissible, ball_box, bounds_of, project
from robrep.rows.masks import attacked_robust
from robrep.data import load_dataset
from robrep.harness.plan import claim_points
from robrep.rows.files import read_results
from robrep.verify import attacked_model

ITERATIONS, STARTS = 100, 5


def art_attacks(model, shape, n_classes: int, norm: str, eps: float):
    """ART's attacks on ``model`` at radius ``eps``: (name, attack) pairs."""
    from art.attacks.evasion import AutoProjectedGradientDescent, DeepFool
    from art.estimators.classification import PyTorchClassifier

    logging.getLogger("art").setLevel(logging.WARNING)
    clf = PyTorchClassifier(model, torch.nn.CrossEntropyLoss(), input_shape=tuple(shape), nb_classes=n_classes,
                            clip_values=tuple(bounds_of(model)), device_type="cpu")
    order = np.inf if norm == "linf" else 2
    apgd = {loss: AutoProjectedGradientDescent(clf, norm=order, eps=eps, eps_step=2 * eps, max_iter=ITERATIONS,
                                               nb_random_init=STARTS, batch_size=500, loss_type=loss, verbose=False)
            for loss in ("cross_entropy", "difference_logits_ratio")}
    return [("APGD-CE", apgd["cross_entropy"]), ("APGD-DLR", apgd["difference_logits_ratio"]),
            ("DeepFool", DeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=n_classes, batch_size=500, verbose=False))]


def broken_by(model, x, y, x_adv, eps: float, norm: str) -> torch.Tensor:
    """Per point: the adversarial input (projected into the ball) is admissible and misclassified."""
    limits = bounds_of(model)
    x_adv = project(x_adv, ball_box(x, eps, norm, limits), eps, norm, limits)
    with torch.no_grad():
        wrong = model(x_adv).argmax(1) != y
    return wrong & admissible(x, x_adv, eps, norm, limits)


def compare(folder: Path, data_root=None) -> list[dict]:
    df = read_results(folder / "results.csv")
    out = []
    for (run, dataset, task), rows in df.groupby(["run", "dataset", "task"], sort=True):
        first = rows.iloc[0]
        radii = sorted(set(rows["radius"]))
        model = attacked_model(folder, first, str(first["checkpoint"]), "cpu")
        ds = load_dataset(dataset, root=data_root)
        idx, x, y = claim_points(ds, first)
        ours = attacked_robust(folder, df, first, radii)  # the protocol's per-point worst case
        worst = rows[rows["suite"] == "worst-case"].set_index("radius")["adversarial_accuracy"]
        for i, eps in enumerate(radii):
            assert abs(ours[i].float().mean().item() - float(worst[eps])) < 1e-9, "masks and worst-case row differ"
            if eps == 0:
                continue
            t0 = time.perf_counter()
            theirs = torch.zeros(len(x), dtype=torch.bool)
            by_attack = {}
            for name, attack in art_attacks(model, x.shape[1:], int(first["n_classes"]), first["norm"], eps):
                adv = torch.from_numpy(attack.generate(x.numpy(), y=y.numpy())).to(x.dtype)
                by_attack[name] = broken_by(model, x, y, adv, eps, first["norm"])
                theirs |= by_attack[name]
            art_robust = ~theirs & ours[0]  # a point misclassified clean is not robust to anyone
            only = (ours[i] & art_robust.logical_not()).nonzero().flatten().tolist()
            out.append({"run": run, "learner": first["learner"], "dataset": dataset, "task": task,
                        "norm": first["norm"], "radius": eps, "points": len(x),
                        "protocol": ours[i].float().mean().item(), "outside": art_robust.float().mean().item(),
                        "broken_outside_only": int((ours[i] & art_robust.logical_not()).sum()),
                        "broken_protocol_only": int((~ours[i] & art_robust).sum()),
                        # the test points ART broke that the protocol left robust, and which of its attacks did
                        "outside_only": [{"point": int(idx[j]), "by": [n for n, hit in by_attack.items() if hit[j]]}
                                         for j in only],
                        "outside_seconds": round(time.perf_counter() - t0, 1)})
            line = out[-1]
            print(f"{run:48} {task:6} {eps:5g}  protocol {line['protocol']:.3f}  ART {line['outside']:.3f}  "
                  f"ART only {line['broken_outside_only']:3d}  protocol only {line['broken_protocol_only']:3d}  "
                  f"({line['outside_seconds']:.0f} s)", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders of robrep bench --protocol NAME")
    parser.add_argument("--json", type=Path, help="write the comparison here")
    parser.add_argument("--data-root", help="folder of a folder-backed data set")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import art

    rows = [r for run in args.runs for r in compare(run, args.data_root)]
    higher = [r for r in rows if r["protocol"] > r["outside"]]
    print(f"{len(rows)} cells; the protocol's worst case is higher than ART's in {len(higher)}; "
          f"{sum(r['broken_outside_only'] for r in rows)} points broken by ART only")
    if args.json:
        args.json.write_text(json.dumps({
            "command": "python benchmarks/outside_suite.py " + " ".join(map(str, args.runs)),
            "suite": f"adversarial-robustness-toolbox {art.__version__}: APGD-CE, APGD-DLR ({ITERATIONS} iterations, "
                     f"{STARTS} starts), DeepFool", "machine": platform.processor() or platform.machine(),
            "rows": rows}, indent=1) + "\n")
    return 1 if higher else 0


if __name__ == "__main__":
    raise SystemExit(main())
