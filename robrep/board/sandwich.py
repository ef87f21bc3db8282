"""The robustness sandwich on a board: where one encoder's certified lower bound (``robrep certify``) lies above
another's attacked upper bound, the first is provably more robust than the second, whatever attack comes later."""
from __future__ import annotations

import pandas as pd


def provable(board: pd.DataFrame, better: str, worse: str, task: str, arch: str = "mlp") -> str:
    """One sentence: the radii at which learner ``better``'s certified robust accuracy exceeds learner
    ``worse``'s attacked one on ``board`` (standard probe, ``arch``), with both numbers; or that it holds at
    none, or that ``better`` has no certified rows yet."""
    rows = board[(board["task"] == task) & (board["arch"] == arch) & (board["probe"] == "standard")
                 & (board["suite"] == "worst-case")]
    mine = rows[rows["learner"] == better].set_index("radius")
    theirs = rows[rows["learner"] == worse].set_index("radius")
    if mine.empty or theirs.empty:
        raise ValueError(f"the board has no worst-case rows of {better} and {worse} on {task} ({arch})")
    if "certified_accuracy" not in mine or mine["certified_accuracy"].isna().all():
        return f"{better} has no certified lower bound on this board yet (robrep certify)"
    held = [(r, float(mine.loc[r, "certified_accuracy"]), float(theirs.loc[r, "adversarial_accuracy"]))
            for r in sorted(mine.index) if r > 0 and r in theirs.index
            and float(mine.loc[r, "certified_accuracy"]) > float(theirs.loc[r, "adversarial_accuracy"])]
    if not held:
        return (f"at no attacked radius is {better}'s certified robust accuracy above {worse}'s attacked one: "
                "nothing is proven between them yet")
    return "; ".join(f"at radius {r:g}, {better}'s certified robust accuracy ({c:.3f}) is above what the attacks "
                     f"leave of {worse} ({a:.3f})" for r, c, a in held) + f": {better} is provably more robust there"
