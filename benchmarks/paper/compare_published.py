"""Does a re-run give the published numbers? Compare a run's results.csv with leaderboard/.

    python benchmarks/paper/compare_published.py leaderboard-runs/fig8_labels [--board leaderboard]

Rows are matched on what was run (run name, i.e. learner and its full config; data set, task,
suite, attack and its config, radius, number of test points, seed, label fraction), not on the
encoder's hash, so a re-trained encoder is matched to its published row. Prints how many rows
matched, how many encoders came back bit for bit (same SHA-256), and the largest difference in
nominal and adversarial accuracy. Exit status 1 if any matched number differs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robrep.leaderboard import read_boards
from robrep.results import MATCH_RUN, read_results

MATCH = list(MATCH_RUN)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a run folder (holding results.csv) or a results CSV")
    parser.add_argument("--board", type=Path, default=Path("leaderboard"), help="leaderboard folder")
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
    worst = 0.0
    for col in ("nominal_accuracy", "adversarial_accuracy"):
        diff = (both[col] - both[f"{col}_published"]).abs()
        worst = max(worst, float(diff.max()))
        at = both.loc[diff.idxmax()]
        where = f" ({at['run']} / {at['task']} / {at['attack']} / radius {at['radius']:g})" if diff.max() > 0 else ""
        print(f"  {col}: largest difference {diff.max():.4f}{where}; {int((diff > 0).sum())} rows differ")
    return 0 if worst == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
