"""The import rules that keep the package livable, checked on the code itself.

- ``robrep.rows`` and ``robrep.board`` import neither the attacks nor the harness (nor what only they need:
  checks, encoders, probes, training): the row layout and the boards stand below the bench.
- Reading and publishing a board, and ``import robrep``, load no attack library (torchattacks, foolbox).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "robrep"
ABOVE_ROWS_AND_BOARD = ("robrep.attacks", "robrep.harness", "robrep.checks", "robrep.encoders", "robrep.probes",
                        "robrep.train", "robrep.verify", "robrep.sweep", "robrep.cli")


def robrep_imports(path: Path) -> set[str]:
    """Every robrep module ``path`` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("robrep"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("robrep"))
    return found


@pytest.mark.parametrize("path", sorted([*PACKAGE.glob("rows/*.py"), *PACKAGE.glob("board/*.py")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_rows_and_boards_stand_below_the_bench(path):
    above = sorted(m for m in robrep_imports(path) if m.startswith(ABOVE_ROWS_AND_BOARD))
    assert not above, f"{path.relative_to(PACKAGE.parent)} imports {above}"


def test_the_rule_itself_sees_an_import_from_above(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from robrep.attacks.pgd import PGD\n    return PGD\n")
    assert robrep_imports(bad) & {"robrep.attacks.pgd"}


@pytest.mark.parametrize("code", [
    "import robrep",
    "from robrep.board.leaderboard import read_boards; read_boards('leaderboard')",
    "from robrep.board.headline import headline_table; from robrep.board.leaderboard import read_boards; "
    "headline_table(read_boards('leaderboard'))",
    "from robrep.rows import read_results; read_results('leaderboard/mnist5k-linf.csv')",
])
def test_reading_boards_and_rows_loads_no_attack_library(code):
    repo = PACKAGE.parent
    probe = (f"{code}\nimport sys\nloaded = [m for m in ('torchattacks', 'foolbox') if m in sys.modules]\n"
             "assert not loaded, loaded\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
