"""The command line a benchmark script was run with, as its JSON output records it: the script and every
argument, without ``--json FILE`` (where the output went is not part of what was measured)."""
from __future__ import annotations

import sys
from pathlib import Path


def command() -> str:
    argv = sys.argv[1:]
    if "--json" in argv:
        del argv[argv.index("--json"):argv.index("--json") + 2]
    return " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *argv])
