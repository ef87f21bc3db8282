"""mkdocs hooks: the parts of the site that are generated, so they cannot drift from the code and the boards.

- ``<!-- cli-help -->``: every ``robrep`` command's ``--help``, from the parser the command itself uses;
- ``<!-- include CHANGELOG.md -->``: the changelog at the repository's root (links to files outside the site
  shown as paths);
- the published boards (``leaderboard/``: PNGs, the web page and its encoder pages, image grids) are added to the
  site as they are, so pages can show and link them.
The numbers in the pages are filled by ``robrep leaderboard --render`` (``robrep.board.blocks``) and checked by
the tests; this hook does not change them.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[([^\]]*)\]\((?!https?://|#)([^)]+)\)")


def _cli_help() -> str:
    from robrep.cli import build_parser

    parser = build_parser()
    parts = [f"```text\n{parser.format_help()}```"]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        parts.append(f"## robrep {name}\n\n```text\n{command.format_help()}```")
    return "\n\n".join(parts)


def _changelog() -> str:
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    text = re.sub(r"^# .*\n", "", text, count=1)
    text = re.sub(r"^<img [^\n]*\n", "", text, flags=re.M)  # the history's image grids: on the leaderboard page
    return LINK.sub(lambda m: f"{m[1]} (`{m[2]}`)" if m[1] else f"`{m[2]}`", text)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if "<!-- cli-help -->" in markdown:
        markdown = markdown.replace("<!-- cli-help -->", _cli_help())
    if "<!-- include CHANGELOG.md -->" in markdown:
        markdown = markdown.replace("<!-- include CHANGELOG.md -->", _changelog())
    return markdown


def on_files(files, config):
    board = ROOT / "leaderboard"
    for path in sorted(board.rglob("*")):
        if path.is_file() and path.suffix in (".png", ".html") and "sweeps" not in path.parts:
            rel = path.relative_to(ROOT).as_posix()
            files.append(File.generated(config, rel, abs_src_path=str(path)))
    return files
