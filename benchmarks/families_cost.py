"""What the families' rows not yet run would cost: each learner's ConvNet entry on mnist5k-linf and its MLP entry
on mnist5k-l2, projected from the published boards.

    python benchmarks/families_cost.py [--leaderboard leaderboard] [--json benchmarks/results/families_cost.json]

From the rows of the published boards (their ``train_seconds`` and each attack cell's ``wall_seconds``, as the
families table counts them):

- each learner's measured MLP entry on mnist5k-linf (standard probe): training and the protocol's attacks;
- ConvNet over MLP: for the learners published with both networks on mnist5k-linf (the reference encoders), the
  ratio of their ConvNet training seconds to their MLP ones and of their attack seconds; a learner's ConvNet entry
  is projected as its MLP training times the largest training ratio plus its MLP attacks times the largest
  attack ratio (the larger of the reference encoders', so the projection errs long);
- L2 over L-inf: for the learners on both mnist5k boards, the ratio of their attack seconds; a learner's L2 entry
  is its MLP training (the checkpoint is shared) plus its L-inf attacks times the largest ratio.

Where a row is published its measured minutes are given instead. The minutes are this machine's (one thread of a
2-core CPU, beside other jobs); a GPU divides the attacks' share by its throughput over this CPU's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from script_command import command  # noqa: E402


def seconds(board: pd.DataFrame, arch: str) -> pd.DataFrame:
    """Per learner of ``board`` (architecture ``arch``, standard probe, its first task): training seconds and the
    protocol's attack seconds."""
    rows = board[(board["arch"] == arch) & (board["probe"] == "standard")]
    cells = rows[rows["suite"] != "worst-case"].drop_duplicates(["learner", "task", "suite", "attack"])
    return pd.DataFrame({"train": rows.groupby("learner")["train_seconds"].max(),
                         "attacks": cells.groupby("learner")["wall_seconds"].sum()}).dropna()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--leaderboard", type=Path, default=Path("leaderboard"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from robrep.board.leaderboard import read_board

    linf, l2 = read_board(args.leaderboard, "mnist5k-linf"), read_board(args.leaderboard, "mnist5k-l2")
    mlp, conv, l2_mlp = seconds(linf, "mlp"), seconds(linf, "conv"), seconds(l2, "mlp")
    both = conv.index.intersection(mlp.index)
    train_ratio = float((conv.loc[both, "train"] / mlp.loc[both, "train"]).max())
    attack_ratio = float((conv.loc[both, "attacks"] / mlp.loc[both, "attacks"]).max())
    both_l2 = l2_mlp.index.intersection(mlp.index)
    l2_ratio = float((l2_mlp.loc[both_l2, "attacks"] / mlp.loc[both_l2, "attacks"]).max())
    print(f"ConvNet / MLP (from {', '.join(both)}): training x{train_ratio:.1f}, attacks x{attack_ratio:.1f}; "
          f"L2 / L-inf attacks (from {', '.join(both_l2)}): x{l2_ratio:.2f}")
    rows = []
    for learner, s in mlp.sort_values("attacks").iterrows():
        measured_conv, measured_l2 = learner in conv.index, learner in l2_mlp.index
        c = conv.loc[learner] if measured_conv else None
        m = l2_mlp.loc[learner] if measured_l2 else None
        rows.append({
            "learner": learner, "mlp_minutes": round((s["train"] + s["attacks"]) / 60, 1),
            "conv_minutes": round(((c["train"] + c["attacks"]) if measured_conv else
                                   s["train"] * train_ratio + s["attacks"] * attack_ratio) / 60, 1),
            "conv": "measured" if measured_conv else "projected",
            "l2_minutes": round(((m["train"] + m["attacks"]) if measured_l2 else
                                 s["train"] + s["attacks"] * l2_ratio) / 60, 1),
            "l2": "measured" if measured_l2 else "projected"})
        r = rows[-1]
        print(f"  {learner:16} MLP {r['mlp_minutes']:6.1f} min   ConvNet {r['conv_minutes']:6.1f} ({r['conv']})   "
              f"L2 {r['l2_minutes']:6.1f} ({r['l2']})")
    total = {k: round(sum(r[f"{k}_minutes"] for r in rows if r[k] == "projected"), 1) for k in ("conv", "l2")}
    print(f"not run yet: ConvNet {total['conv']:.0f} min, L2 {total['l2']:.0f} min on this machine")
    if args.json:
        args.json.write_text(json.dumps({
            "command": command(), "ratios": {"conv_train": round(train_ratio, 2), "conv_attacks": round(attack_ratio, 2),
                                             "l2_attacks": round(l2_ratio, 2)},
            "reference": {"conv": list(both), "l2": list(both_l2)}, "rows": rows,
            "projected_hours": {k: round(v / 60, 1) for k, v in total.items()},
            "date": time.strftime("%Y-%m-%d")}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
