"""robrep at another git revision, for the scripts that compare this tree against it (``--against REV``)."""
from __future__ import annotations

import contextlib
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def checked_out(rev: str):
    """The path of a temporary git worktree of this repository at ``rev`` (removed, and git's record of it
    pruned, on exit)."""
    with tempfile.TemporaryDirectory(prefix="robrep-against-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False,
                           capture_output=True)
            subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], check=False, capture_output=True)
