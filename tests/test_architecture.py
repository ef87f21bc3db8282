"""The import rules that keep the package livable, checked on the code itself.

- ``robrep.rows`` and ``robrep.board`` import neither the attacks nor the harness (nor what only they need:
  checks, encoders, probes, training): the row layout and the boards stand below the bench.
- Reading and publishing a board, and ``import robrep``, load no attack library (torchattacks, foolbox).
- The modules stand in layers (``LAYERS``); at most ``MOST_UP`` imports run from a lower layer to a higher one,
  each marked ``# up:`` with its reason on the import line; the import graph has no cycle.
- No module is imported by more than ``MOST_IMPORTERS`` others, except the foundations every layer needs; no
  function is longer than ``MOST_LINES`` lines.
"""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "robrep"
ABOVE_ROWS_AND_BOARD = ("robrep.attacks", "robrep.harness", "robrep.checks", "robrep.encoders", "robrep.probes",
                        "robrep.train", "robrep.verify", "robrep.sweep", "robrep.cli")


# Lowest first. A module takes the layer of its longest matching prefix.
LAYERS = {
    # foundations: no robrep module above them
    "robrep._version": 0, "robrep.io": 0, "robrep.escape": 0, "robrep.rng": 0, "robrep.threads": 0,
    "robrep.validate": 0, "robrep.progress": 0, "robrep.provenance": 0, "robrep.distributed": 0,
    "robrep.registry": 0, "robrep.plugins": 0,
    # the data and the row layout
    "robrep.rows": 1, "robrep.data": 1, "robrep.nets": 1, "robrep.fastconv": 1, "robrep.protocols": 1,
    # the geometry of balls and the training-time ascent on them (learners and probes train on attacked inputs)
    "robrep.attacks.geometry": 1, "robrep.ascent": 1,
    # learners, their checkpoints and training; output folders; the boards (which read rows only)
    "robrep.learners": 2, "robrep.checkpoint": 2, "robrep.train": 2, "robrep.folders": 2, "robrep.board": 2,
    # the attacked model: encoders, probes, attacks and their checks
    "robrep.encoders": 3, "robrep.probes": 3, "robrep.attacks": 3, "robrep.checks": 3, "robrep.certify": 3,
    "robrep.certify.run": 4,  # a command on run folders, as verify
    # the bench and the commands built on it
    "robrep.harness": 4, "robrep.verify": 4, "robrep.sweep": 4, "robrep.toy": 4,
    # the front doors
    "robrep": 5, "robrep.cli": 5, "robrep.__main__": 5,
}
MOST_UP = 4
MOST_IMPORTERS = 10
# Imported by nearly everything by design: writes and hashes, name lookup, the version, and the row layout
# (the one home of the result row: every module that reads, writes, checks or shows a row needs it).
FOUNDATIONS = {"robrep.io", "robrep.registry", "robrep._version", "robrep.rows.layout"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def import_edges(path: Path) -> list[tuple[str, int, str]]:
    """(imported module, line, source line) for each robrep module ``path`` imports, anywhere in the file."""
    lines = path.read_text().splitlines()
    edges = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("robrep"):
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.startswith("robrep")]
        else:
            continue
        for target in set(targets):
            while target not in MODULES:
                target = target.rpartition(".")[0]
            if target != module_name(path):
                edges.append((target, node.lineno, lines[node.end_lineno - 1]))
    return edges


GRAPH = {name: import_edges(path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    assert all(any(m == p or m.startswith(p + ".") for p in LAYERS) for m in MODULES)


def test_few_imports_run_back_up_and_each_says_why():
    up = [(m, t, line) for m, edges in GRAPH.items() for t, _, line in edges if layer(t) > layer(m)]
    assert len(up) <= MOST_UP, "\n".join(f"{m} -> {t}" for m, t, _ in up)
    unexplained = [f"{m} -> {t}: {line.strip()}" for m, t, line in up if not re.search(r"#\s*up:", line)]
    assert not unexplained, unexplained


def test_the_import_graph_has_no_cycle():
    edges = {m: {t for t, _, _ in e if not t.startswith(m + ".")} for m, e in GRAPH.items()}  # a package's own parts
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in edges[m]:
            assert state.get(t) != 1, " -> ".join([*path[path.index(t):], t]) if t in path else f"{m} -> {t}"
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])


def test_no_module_is_a_hub():
    importers: dict[str, set[str]] = {}
    for m, edges in GRAPH.items():
        for t, _, _ in edges:
            importers.setdefault(t, set()).add(m)
    hubs = {t: len(s) for t, s in importers.items() if len(s) > MOST_IMPORTERS and t not in FOUNDATIONS}
    assert not hubs, hubs


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


MOST_LINES = 60


def test_no_function_is_longer_than_a_screen():
    long = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= MOST_LINES:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not long, long
