"""Does a re-run give the published numbers? Compare a run's results.csv with leaderboard/.

    python benchmarks/paper/compare_published.py leaderboard-runs/fig8_labels [--board leaderboard]

Rows are matched on what was run (run name, i.e. learner and its full config; data set, task,
suite, attack and its config, radius, number of test points, seed, label fraction), not on the
encoder's hash, so a re-trained encoder is matched to its published row. Prints how many rows
matched, how many encoders came back bit for bit (same SHA-256), and the largest difference in
nominal and adversarial accuracy, and for each number whether it matches exactly, within
``--tolerance`` (default 0.005: a test point or two of 500 or 1,000 that lies on a decision boundary
and falls the other way under another machine's float32 rounding), or differs. Exit status 1 only if
a number differs by more than the tolerance. ``--list`` prints every number that is not exact.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robrep.board.leaderboard import read_boards
from robrep.rows import MATCH_RUN, read_results

MATCH = list(MATCH_RUN)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a run folder (holding results.csv) or a results CSV")
    parser.add_argument("--board", type=Path, default=Path("leaderboard"), help="leaderboard folder")
    parser.add_argument("--tolerance", type=float, default=0.005, help="largest difference that still matches")
    parser.add_argument("--list", action="store_true", help="print every number that is not exactly the published")
    args = parser.parse_args()
    path = args.results / "results.csv" if args.results.is_dir() else args.results
    new = read_results(path)
    if new is None:
        parser.error(f"no results file at {path}")
    published = read_boards(args.board)
    for df in (new, published):
        df["radius"] = df["radius"].astype(float)
    both = new.merge(published, on=MATCH, suffixes=("", "_published"))
    if both.empty:
        print(f"none of the {len(new)} rows of {path} is on the leaderboard in {args.board}")
        return 1
    same_sha = both.groupby("run").apply(lambda g: (g["encoder_sha256"] == g["encoder_sha256_published"]).all(),
                                         include_groups=False)
    print(f"{len(both)} of {len(new)} rows of {path} are published; "
          f"encoders identical (SHA-256): {int(same_sha.sum())} of {len(same_sha)}")
    beyond = 0
    for col in ("nominal_accuracy", "adversarial_accuracy"):
        diff = (both[col] - both[f"{col}_published"]).abs()
        exact, within = int((diff == 0).sum()), int(((diff > 0) & (diff <= args.tolerance + 1e-12)).sum())
        over = int((diff > args.tolerance + 1e-12).sum())
        beyond += over
        at = both.loc[diff.idxmax()]
        where = f" ({at['run']} / {at['task']} / {at['attack']} / radius {at['radius']:g})" if diff.max() > 0 else ""
        print(f"  {col}: {exact} exact, {within} within {args.tolerance:g}, {over} differ by more; "
              f"largest difference {diff.max():.4f}{where}")
        if args.list:
            for _, r in both[diff > 0].iterrows():
                verdict = "within tolerance" if abs(r[col] - r[f"{col}_published"]) <= args.tolerance + 1e-12 else "DIFFERS"
                print(f"    {r['run']} / {r['task']} / {r['suite']}/{r['attack']} / radius {r['radius']:g}: "
                      f"{r[col]:.4f} vs published {r[f'{col}_published']:.4f} ({verdict})")
    return 0 if beyond == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
