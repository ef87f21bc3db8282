"""Re-run the paper's experiments and publish them, printing each one's wall time.

    python benchmarks/paper/reproduce.py                       # every config that runs on a CPU
    python benchmarks/paper/reproduce.py fig7_selection fig8   # configs whose name starts with these
    python benchmarks/paper/reproduce.py fig8 --out /tmp/rerun --compare
                                       # re-run into /tmp/rerun/<name>, check against leaderboard/

Each config runs as `robrep bench --config benchmarks/paper/<name>.toml` into the folder its
`out` names (a finished cell is skipped, so a killed run resumes), then `robrep leaderboard
<out>` merges it into leaderboard/. Table 1 needs the real CelebA (and, realistically, a GPU)
and is left out unless named. Trained checkpoints are cached under $ROBREP_CACHE (default
~/.cache/robrep); with the same seed on the same machine the published numbers come back.
``--compare`` checks that with compare_published.py and exits 1 if any re-run number differs
from its published row (it needs a fresh ``--out``: a run folder that already has its cells
skips them).
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
NEEDS_DATA = ("table1_celeba",)  # folder-backed data sets: not on a fresh machine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="config name prefixes (default: all but table1_celeba)")
    parser.add_argument("--no-publish", action="store_true", help="run the benchmarks but leave leaderboard/ alone")
    parser.add_argument("--out", type=Path, help="run each config into OUT/<name> instead of the folder it names")
    parser.add_argument("--compare", action="store_true",
                        help="compare each re-run with leaderboard/ instead of publishing it (exit 1 if any differ)")
    args = parser.parse_args()
    configs = sorted(HERE.glob("*.toml"))
    if args.names:
        configs = [c for c in configs if any(c.stem.startswith(n) for n in args.names)]
    else:
        configs = [c for c in configs if c.stem not in NEEDS_DATA]
    if not configs:
        parser.error(f"no config in {HERE} matches {args.names}")
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}", flush=True)
    differ = []
    for config in configs:
        out = str(args.out / config.stem) if args.out else tomllib.loads(config.read_text())["out"]
        t0 = time.perf_counter()
        subprocess.run(["robrep", "bench", "--config", str(config), "--out", out], check=True)
        seconds = time.perf_counter() - t0
        print(f"{config.stem}: {seconds:.0f} s wall (robrep bench --config {config.relative_to(HERE.parent.parent)} "
              f"--out {out})", flush=True)
        if args.compare:
            compare = [sys.executable, str(HERE / "compare_published.py"), out,
                       "--board", str(HERE.parent.parent / "leaderboard")]
            if subprocess.run(compare).returncode != 0:
                differ.append(config.stem)
        elif not args.no_publish:
            subprocess.run(["robrep", "leaderboard", "--replace", out], check=True, stdout=subprocess.DEVNULL)
    if differ:
        print(f"re-run differs from the published numbers: {', '.join(differ)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
