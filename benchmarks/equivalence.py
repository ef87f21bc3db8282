"""Does a change of the code leave everything a user sees as it was? Fingerprints of the outputs, and a comparison.

    python benchmarks/equivalence.py record before.json [--quick]
    python benchmarks/equivalence.py compare before.json after.json

``record`` runs, in a scratch folder with an empty cache and one thread per process:
1. the default ``robrep bench``;
2. a three-suite run: ``robrep bench --learner vae --learner se-adversarial --suite native --suite torchattacks
   --suite foolbox --n-examples 150 --radii 0,0.05,0.1 --steps 50 --restarts 3``;
3. ``robrep verify`` on both runs;
4. ``robrep leaderboard --render`` and ``--html`` on a copy of ``leaderboard/``;
and writes what they produced: every row of both runs (every column but the ones that name a time, a version or a
path, which are listed under ``ignored``), the verdicts, and the SHA-256 of every file of the rendered boards and
pages. ``--quick`` runs steps 1 and 2 at a small budget (for trying the script, not for the comparison).
``compare`` prints each difference and exits 1 if there is one. Run ``record`` with the code before a change and
with the code after it, on one machine: float32 training repeats bit for bit only on the same CPU kind and threads.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# columns that name a time, a version, a path or a verification date: they differ between any two runs
IGNORED = ("timestamp", "wall_seconds", "train_seconds", "robrep_version", "checkpoint", "source", "machine")
THREE_SUITES = ["--learner", "vae", "--learner", "se-adversarial", "--suite", "native", "--suite", "torchattacks",
                "--suite", "foolbox", "--n-examples", "150", "--radii", "0,0.05,0.1", "--steps", "50",
                "--restarts", "3"]
QUICK = ["--learner", "vae", "--epochs", "1", "--n-examples", "50", "--steps", "5", "--restarts", "1"]


def run(argv: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "robrep", *argv], env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode not in (0, 1):  # 1: a check warned (the rows are still the rows)
        raise SystemExit(f"robrep {' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}")
    return time.perf_counter() - t0


def rows(csv: Path) -> list[dict]:
    import pandas as pd

    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df = df.drop(columns=[c for c in IGNORED if c in df.columns])
    if "verified" in df:  # "held: ... (robrep verify, <date>)": the verdict without its date
        df["verified"] = df["verified"].str.replace(r", \d{4}-\d{2}-\d{2}\)", ")", regex=True)
    records = df.to_dict("records")
    return sorted(records, key=lambda r: json.dumps(r, sort_keys=True))


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def record(path: Path, quick: bool) -> None:
    scratch = Path(tempfile.mkdtemp(prefix="robrep-equivalence-"))
    env = {**os.environ, "ROBREP_CACHE": str(scratch / "cache"), "OMP_NUM_THREADS": "1"}
    env.pop("ROBREP_DATA", None)
    seconds = {}
    try:
        runs = {"default": [] if not quick else QUICK, "three-suites": THREE_SUITES if not quick else
                [*QUICK, "--suite", "native", "--suite", "torchattacks", "--suite", "foolbox"]}
        for name, argv in runs.items():
            seconds[name] = run(["bench", *argv, "--threads", "1", "--out", str(scratch / name)], env, scratch)
            seconds[f"verify {name}"] = run(["verify", str(scratch / name)], env, scratch)
        board = scratch / "leaderboard"
        shutil.copytree(REPO / "leaderboard", board)
        seconds["render"] = run(["leaderboard", "--render", "--out", str(board)], env, scratch)
        seconds["html"] = run(["leaderboard", "--html", "--out", str(board)], env, scratch)
        out = {"commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                        text=True).stdout.strip(),
               "quick": quick, "ignored": list(IGNORED), "seconds": seconds,
               "rows": {name: rows(scratch / name / "results.csv") for name in runs},
               "board": files(board)}
        path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
        print(f"wrote {path}: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compare(a: Path, b: Path) -> int:
    before, after = json.loads(a.read_text()), json.loads(b.read_text())
    differences = 0
    for name in sorted(set(before["rows"]) | set(after["rows"])):
        x, y = before["rows"].get(name, []), after["rows"].get(name, [])
        if len(x) != len(y):
            print(f"{name}: {len(x)} rows before, {len(y)} after")
            differences += 1
            continue
        for i, (r, s) in enumerate(zip(x, y)):
            changed = sorted(k for k in set(r) | set(s) if r.get(k) != s.get(k))
            if changed:
                differences += 1
                print(f"{name} row {i}: " + "; ".join(f"{k}: {r.get(k)!r} -> {s.get(k)!r}" for k in changed))
    for name in sorted(set(before["board"]) | set(after["board"])):
        if before["board"].get(name) != after["board"].get(name):
            differences += 1
            print(f"board file {name}: {before['board'].get(name, 'missing')[:12]} -> "
                  f"{after['board'].get(name, 'missing')[:12]}")
    n_rows = sum(len(v) for v in before["rows"].values())
    print(f"{differences} difference(s) in {n_rows} rows and {len(before['board'])} board files "
          f"({before['commit'][:8]} -> {after['commit'][:8]})")
    return 1 if differences else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("record")
    r.add_argument("path", type=Path)
    r.add_argument("--quick", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("before", type=Path)
    c.add_argument("after", type=Path)
    args = p.parse_args()
    if args.what == "record":
        record(args.path, args.quick)
        return 0
    return compare(args.before, args.after)


if __name__ == "__main__":
    sys.exit(main())
