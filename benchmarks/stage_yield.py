"""What each stage of the standard protocol's cascade buys, read from the published boards: its seconds, and the
points it broke first (that no earlier stage had broken), summed over every entry, task and radius (a point
counts once at each radius it falls at: point-radii).

    python benchmarks/stage_yield.py [--boards mnist5k-linf,mnist5k-l2,...] [--json FILE]

A cascade's stage attacks only the points every earlier stage left robust (``robrep.attacks.cascade``), so its
``n_broken_first`` (the rows record it) is what it added to the worst case. A stage that broke no point first
on any entry of a board could be left out of that board's cascade without changing one published number (the
stages after it would see the same points): the last lines say which, and what the cascade would have cost
without them. That is a fact about the reference encoders, not a licence: a new encoder (gradient masking, a
defence no reference encoder has) is exactly where an attack that never mattered on these can decide a number.
Seconds are the published cells' own (``wall_seconds``: one thread each, the machines and neighbours of the
runs that made them), so shares within a board are comparable, absolute values are not.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from script_command import command  # noqa: E402
from robrep.protocols import PROTOCOLS  # noqa: E402

BOARDS = Path(__file__).resolve().parent.parent / "leaderboard"


def stages(board: Path) -> pd.DataFrame:
    """Per cascade stage (suite/attack) of one board: its place in the cascade, seconds, points broken first,
    points attacked, entries in which it broke a point first."""
    rows = pd.read_csv(board)
    rows = rows[(rows["protocol"] == "cascade") & (rows["suite"] != "worst-case")].copy()
    rows["stage"] = rows["suite"] + "/" + rows["attack"].str.replace(r"\(.*", "", regex=True)
    rows["place"] = [len(json.loads(c).get("cascade_after", {}).get("attacks", [])) for c in rows["attack_config"]]
    cell = ["label", "task", "stage"]
    seconds = rows.drop_duplicates(cell).groupby("stage")["wall_seconds"].sum()
    per_entry = rows.groupby(["label", "stage"])["n_broken_first"].sum()
    table = rows.groupby("stage").agg(place=("place", "median"), broken_first=("n_broken_first", "sum"),
                                      attacked=("n_attacked", "sum"))
    table["seconds"] = seconds
    table["entries_broken"] = (per_entry > 0).groupby("stage").sum()
    table["entries"] = rows.groupby("stage")["label"].nunique()
    return table.sort_values("place")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boards", default=",".join(n for n in PROTOCOLS if (BOARDS / f"{n}.csv").exists()))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {"command": command(), "boards": {}}
    for name in args.boards.split(","):
        table = stages(BOARDS / f"{name}.csv")
        total = table["seconds"].sum()
        print(f"\n{name}: {int(table['entries'].max())} entries, {total / 60:.0f} min of attacks in all")
        print(f"{'stage':34s} {'seconds':>8s} {'share':>6s} {'attacked':>9s} {'broken first':>13s} "
              f"{'in entries':>11s}")
        for stage, r in table.iterrows():
            print(f"{stage:34s} {r['seconds']:8.0f} {r['seconds'] / total:6.1%} {int(r['attacked']):9d} "
                  f"{int(r['broken_first']):13d} {int(r['entries_broken']):5d} of {int(r['entries'])}")
        idle = [s for s, r in table.iterrows() if r["broken_first"] == 0]
        left = total - table.loc[idle, "seconds"].sum()
        print(f"broke no point first on any entry: {', '.join(idle) or 'none'}; the cascade without them: "
              f"{left / total:.0%} of the seconds ({total / left:.2f}x cheaper), every number the same")
        out["boards"][name] = {"stages": table.reset_index().to_dict("records"), "idle": idle,
                               "seconds": total, "seconds_without_idle": left}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
