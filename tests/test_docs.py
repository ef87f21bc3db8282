"""The documentation site: built with mkdocs in strict mode (a broken link or reference fails), and opened in a
real browser."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.fixtures import REPO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
browser = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("ROBREP_REQUIRE_BROWSER"),
                             reason="no chromium here (CI installs it)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_the_site_builds_strict_with_every_page_and_the_boards(site):
    pages = {p.parent.name for p in site.glob("*/index.html")}
    assert {"concepts", "encoders", "protocol", "leaderboard", "learners", "scale", "paper", "reproducibility",
            "performance", "api", "cli", "changelog"} <= pages
    assert (site / "leaderboard" / "index.html").is_file() and (site / "leaderboard" / "mnist5k-linf.png").is_file()
    api = (site / "api" / "index.html").read_text()
    assert "robrep.bench" in api and "radii" in api and "BenchConfig" in api  # from the docstrings
    cli = (site / "cli" / "index.html").read_text()
    assert "usage: robrep bench" in cli and "--eps" in cli  # from the parser itself


def test_a_broken_link_fails_the_strict_build(tmp_path):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "docs" / "concepts.md").write_text("# Concepts\n\n[a page that is not there](nowhere.md)\n")
    shutil.copy(REPO / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    shutil.copytree(REPO / "leaderboard", tmp_path / "leaderboard")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "nowhere.md" in done.stderr


@browser
def test_the_paper_page_opens_in_a_browser_with_its_generated_tables(site):
    res = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                          "--dump-dom", (site / "paper" / "index.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Reproducing the paper" in res.stdout
    tables = re.findall(r"<table[^>]*>.*?</table>", res.stdout, flags=re.S)
    assert len(tables) >= 6 and all(re.search(r"<td[^>]*>0\.\d{3}</td>", t) for t in tables)
