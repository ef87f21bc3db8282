"""Numbers in the README and the documentation are generated from the published boards, never typed."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from robrep.board.blocks import CLOSE, OPEN, BlockError, Boards, marked_files, render_blocks, stale_blocks
from tests.fixtures import REPO

BOARDS = Boards(REPO / "leaderboard")
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HISTORY = {"changelog.md"}  # dated findings: typed as they were measured, and kept so


def test_the_readme_and_the_docs_have_generated_numbers():
    marked = {p.name for p in marked_files(REPO)}
    assert {"README.md", "paper.md", "index.md"} <= marked


@pytest.mark.parametrize("path", marked_files(REPO), ids=lambda p: p.name)
def test_every_generated_number_agrees_with_its_board(path):
    assert stale_blocks(path, BOARDS) == [], "run `robrep leaderboard --render` after publishing"


def _prose(text: str) -> str:
    """``text`` without generated blocks, fenced code and inline code."""
    out, pos = [], 0
    for m in OPEN.finditer(text):
        if m.start() < pos:
            continue
        out.append(text[pos:m.start()])
        pos = text.index(CLOSE, m.end()) + len(CLOSE)
    text = "".join(out) + text[pos:]
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`]*`", "", text)


@pytest.mark.parametrize("path", [p for p in PAGES if p.name not in HISTORY], ids=lambda p: p.name)
def test_no_result_number_is_typed_outside_a_generated_block(path):
    typed = re.findall(r"(?<![\d.])[01]\.\d{3}(?!\d)", _prose(path.read_text(encoding="utf-8")))
    assert not typed, f"{path.name} types result-like numbers {typed}: generate them (robrep.board.blocks)"


def test_a_number_changed_by_hand_is_caught(tmp_path):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"(<!-- robrep:value [^>]*-->)(\d\.\d{3})(<!-- /robrep -->)", text)
    assert m, "the README cites a board value"
    edited = text.replace(m.group(0), m.group(1) + ("0.999" if m.group(2) != "0.999" else "0.998") + m.group(3))
    page = tmp_path / "README.md"
    page.write_text(edited, encoding="utf-8")
    stale = stale_blocks(page, BOARDS)
    assert len(stale) == 1 and m.group(2) in stale[0]


def test_a_table_changed_by_hand_is_caught(tmp_path):
    text = (REPO / "docs" / "paper.md").read_text(encoding="utf-8")
    edited = re.sub(r"\| 0\.(\d{3}) \|", lambda m: f"| 0.{(int(m[1]) + 1) % 1000:03d} |", text, count=1)
    assert edited != text
    page = tmp_path / "paper.md"
    page.write_text(edited, encoding="utf-8")
    assert stale_blocks(page, BOARDS)


def test_a_selection_that_is_not_one_row_is_an_error_naming_the_candidates():
    with pytest.raises(BlockError, match=r"rows match .*need exactly one.*vae-mnist5k-mlp"):
        render_blocks("<!-- robrep:value board=mnist5k-linf task=digit label=vae arch=mlp -->x<!-- /robrep -->",
                      BOARDS)
    with pytest.raises(BlockError, match="no board 'nope'"):
        render_blocks("<!-- robrep:value board=nope -->x<!-- /robrep -->", BOARDS)
    with pytest.raises(BlockError, match="unknown block kind"):
        render_blocks("<!-- robrep:guess board=mnist5k-linf -->x<!-- /robrep -->", BOARDS)
    with pytest.raises(BlockError, match="without its"):
        render_blocks("<!-- robrep:value board=mnist5k-linf task=digit -->x", BOARDS)
    with pytest.raises(BlockError, match="unknown argument"):
        render_blocks("<!-- robrep:table board=mnist5k-linf colour=red -->x<!-- /robrep -->", BOARDS)


def test_render_updates_the_readme_beside_the_boards(tmp_path):
    shutil.copytree(REPO / "leaderboard", tmp_path / "leaderboard")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    shutil.copy(REPO / "benchmarks" / "results" / "bench_default.json", tmp_path / "benchmarks" / "results")
    readme = tmp_path / "README.md"
    good = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"(<!-- robrep:value [^>]*-->)(\d\.\d{3})(<!-- /robrep -->)", good)
    readme.write_text(good.replace(m.group(0), m.group(1) + "0.123" + m.group(3)), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "robrep", "leaderboard", "--render", "--out",
                           str(tmp_path / "leaderboard")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert readme.read_text(encoding="utf-8") == good
    assert "generated numbers" in done.stdout


def test_a_figure_follows_its_board_and_a_missing_one_is_an_error(tmp_path):
    """A plot block writes its PNG beside the board on render, carries a hash of the rows it plotted (a board
    that changed under a figure makes the block stale), and the stale check refuses a figure that is missing."""
    import pandas as pd

    from robrep.rows.files import read_results, write_results

    folder = tmp_path / "leaderboard"
    (folder / "experiments").mkdir(parents=True)
    shutil.copy(REPO / "leaderboard" / "experiments" / "mnist5k-linf.csv", folder / "experiments")
    block = ('<!-- robrep:plot board=experiments/mnist5k-linf task=digit arch=mlp n_examples=500 name=f '
             'title="a figure" -->\n<!-- /robrep -->')
    with pytest.raises(BlockError, match="figure .* is missing"):
        render_blocks(block, Boards(folder))
    text = render_blocks(block, Boards(folder, write=True))
    png = folder / "experiments" / "figures" / "f.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![a figure](leaderboard/experiments/figures/f.png)" in text
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    assert stale_blocks(page, Boards(folder)) == []
    board = read_results(folder / "experiments" / "mnist5k-linf.csv")
    first = board.index[(board["arch"] == "mlp") & (board["n_examples"].astype(int) == 500)][0]
    board.loc[first, "adversarial_accuracy"] = pd.to_numeric(board.loc[first, "adversarial_accuracy"]) / 2
    write_results(folder / "experiments" / "mnist5k-linf.csv", board)
    assert stale_blocks(page, Boards(folder)), "a board that changed under its figure leaves the block stale"


def test_a_json_table_shows_a_scripts_records_and_refuses_missing_columns(tmp_path):
    import json

    (tmp_path / "leaderboard").mkdir()
    (tmp_path / "r.json").write_text(json.dumps({"rows": [{"learner": "vae", "radius": 0.1, "acc": 0.25, "n": 3},
                                                          {"learner": "se", "radius": 0.1, "acc": 1.0, "n": 0}]}))
    boards = Boards(tmp_path / "leaderboard")
    text = render_blocks('<!-- robrep:jsontable file=r.json columns=learner,radius,acc,n headers="encoder,radius,'
                         'robust,points" shares=acc -->\n<!-- /robrep -->', boards)
    assert "| encoder | radius | robust | points |" in text
    assert "| vae | 0.1 | 0.250 | 3 |" in text and "| se | 0.1 | 1.000 | 0 |" in text
    with pytest.raises(BlockError, match="no records with the columns"):
        render_blocks("<!-- robrep:jsontable file=r.json columns=learner,nope -->x<!-- /robrep -->", boards)
    with pytest.raises(BlockError, match="no records 'rows'"):
        render_blocks("<!-- robrep:jsontable file=missing.json columns=learner -->x<!-- /robrep -->", boards)
