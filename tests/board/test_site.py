"""The static leaderboard page (robrep.board.site), opened in a real headless Chromium (Debian's ``chromium``; .ci/run
installs it and sets ROBREP_REQUIRE_BROWSER=1, so CI fails rather than skips without it)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from robrep.board.leaderboard import read_boards
from robrep.board.site import encoder_page_name, write_site
from fixtures import REPO

BOARDS = REPO / "leaderboard"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
browser = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("ROBREP_REQUIRE_BROWSER"),
                             reason="no chromium here (CI installs it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    for f in [*BOARDS.glob("*.csv"), *BOARDS.glob("*.png")]:
        shutil.copy(f, out / f.name)
    shutil.copytree(BOARDS / "images", out / "images")
    index = write_site(read_boards(out), out)
    return out, index


def chromium(url: str, *flags: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is not installed (apt-get install chromium)"
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", *flags, url], capture_output=True, text=True, timeout=120)


def rows(dom: str) -> list[dict]:
    """The headline table's rows as the browser left them: order, hidden or not, learner, numbers."""
    body = dom[dom.index('<table id="board">'):]
    body = body[body.index("<tbody>"):body.index("</tbody>")]
    out = []
    for attrs, cells in re.findall(r"<tr([^>]*)>(.*?)</tr>", body, flags=re.S):
        values = dict(re.findall(r'data-key="([^"]+)" data-value="([^"]*)"', cells))
        out.append({"hidden": "hidden" in attrs, "learner": re.search(r'data-learner="([^"]*)"', attrs).group(1),
                    **{k: float(v) if v else None for k, v in values.items()}})
    return out


@browser
def test_the_page_loads_without_console_errors_sorts_and_filters(site):
    out, index = site
    board = read_boards(out)
    # open it filtered to one learner and sorted by robust accuracy at 0.1, best first
    res = chromium(index.as_uri() + "#sort=r%3D0.1&dir=desc&learner=vae", "--dump-dom")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "INFO:CONSOLE" not in res.stderr, [line for line in res.stderr.splitlines() if "CONSOLE" in line]
    got = rows(res.stdout)
    shown = [r for r in got if not r["hidden"]]
    assert shown and len(shown) < len(got) and {r["learner"] for r in shown} == {"vae"}  # the filter hides rows
    from robrep.board.headline import headline_table

    assert len(got) == len(headline_table(board))  # one row per encoder and protocol
    acc = [r["r=0.1"] for r in shown]  # an L2 board's rows have no radius 0.1: they sort last
    known = [a for a in acc if a is not None]
    assert known and acc[:len(known)] == sorted(known, reverse=True)  # the sort
    assert re.search(rf">{len(shown)} of {len(got)} rows shown<", res.stdout)
    # another sort, no filter: every row shown, ascending clean accuracy
    got = rows(chromium(index.as_uri() + "#sort=clean&dir=asc", "--dump-dom").stdout)
    assert not any(r["hidden"] for r in got)
    clean = [r["clean"] for r in got]
    assert clean == sorted(clean) and clean != [r["clean"] for r in rows(index.read_text())]  # it did move rows


@browser
def test_a_screenshot_of_the_page_and_an_encoder_page_open(site, tmp_path):
    out, index = site
    shot = tmp_path / "page.png"
    res = chromium(index.as_uri() + "#dataset=mnist5k", f"--screenshot={shot}", "--window-size=1400,1000")
    assert res.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    page = next((out / "encoders").glob("se-adversarial-mnist5k-mlp-s0-*.html"))
    res = chromium(page.as_uri(), "--dump-dom")
    assert "INFO:CONSOLE" not in res.stderr and "Every attack's rows" in res.stdout and "selection_steps" in res.stdout


def test_values_from_a_csv_are_escaped_and_page_names_are_plain(site, tmp_path):
    out, _ = site
    board = read_boards(out)
    evil = board[board["run"] == board["run"].iloc[0]].assign(label='<img src=x onerror="alert(1)">',
                                                             run="../../../etc/passwd")
    index = write_site(pd.concat([board, evil], ignore_index=True), tmp_path)
    text = index.read_text()
    assert '<img src=x onerror' not in text and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in text
    assert encoder_page_name("../../../etc/passwd", "ab" * 32) == "---------etc-passwd-abababababab.html"
    assert all(p.parent == tmp_path / "encoders" for p in (tmp_path / "encoders").glob("*.html"))
    assert not (tmp_path.parent / "etc").exists()
