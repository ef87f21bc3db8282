"""Re-run the paper's experiments and publish them, printing each one's wall time.

    python benchmarks/paper/reproduce.py                       # every config that runs on a CPU
    python benchmarks/paper/reproduce.py fig7_selection fig8   # configs whose name starts with these

Each config runs as `robrep bench --config benchmarks/paper/<name>.toml` into the folder its
`out` names (a finished cell is skipped, so a killed run resumes), then `robrep leaderboard
<out>` merges it into leaderboard/. Table 1 needs the real CelebA (and, realistically, a GPU)
and is left out unless named. Trained checkpoints are cached under $ROBREP_CACHE (default
~/.cache/robrep); with the same seed on the same machine the published numbers come back.
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
    args = parser.parse_args()
    configs = sorted(HERE.glob("*.toml"))
    if args.names:
        configs = [c for c in configs if any(c.stem.startswith(n) for n in args.names)]
    else:
        configs = [c for c in configs if c.stem not in NEEDS_DATA]
    if not configs:
        parser.error(f"no config in {HERE} matches {args.names}")
    print(f"machine: {platform.node()} {platform.machine()}, Python {platform.python_version()}", flush=True)
    for config in configs:
        out = tomllib.loads(config.read_text())["out"]
        t0 = time.perf_counter()
        subprocess.run(["robrep", "bench", "--config", str(config)], check=True)
        seconds = time.perf_counter() - t0
        if not args.no_publish:
            subprocess.run(["robrep", "leaderboard", out], check=True, stdout=subprocess.DEVNULL)
        print(f"{config.stem}: {seconds:.0f} s wall (robrep bench --config {config.relative_to(HERE.parent.parent)})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
