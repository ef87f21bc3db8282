"""Names read from files (learners, runs, tasks, attacks of contributed CSVs) as text safe for where it is written.

Markdown renderers pass raw HTML through, so a name is escaped for both: HTML's special characters become
entities and Markdown's own (emphasis, links, code, table pipes) get a backslash. On a terminal, rich's markup
(``[bold]``) is escaped and control characters (escape sequences that move the cursor or retitle the window) are
shown as ``?``. The HTML page escapes with ``html.escape`` where it builds its elements.
"""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MARKDOWN = re.compile(r"([\\`*\[\]|~])")  # not "_": CommonMark ignores it inside words (Wearing_Hat)


def markdown(value: object) -> str:
    """``value`` as literal text in a Markdown table cell or heading: no HTML, no formatting, one line."""
    text = _CONTROL.sub("?", str(value)).replace("\n", " ").replace("\r", " ").replace("\t", " ")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    return _MARKDOWN.sub(r"\\\1", text)


def terminal(value: object) -> str:
    """``value`` as literal text for rich: markup escaped, control characters shown as ``?``."""
    from rich.markup import escape

    return escape(_CONTROL.sub("?", str(value)))


__all__ = ["markdown", "terminal"]


def first_sentence(doc: str | None) -> str:
    """A docstring's first sentence as plain text: lines joined, reStructuredText's ``literals`` and
    :role:`targets` unmarked, cut after the first full stop that ends a sentence (not one inside ``e.g.``,
    ``et al.`` or a number)."""
    text = " ".join((doc or "").strip().split("\n\n")[0].split())
    text = re.sub(r":[a-z]+:`([^`]*)`", r"\1", text).replace("``", "")
    m = re.search(r"(?<!\be\.g)(?<!\bi\.e)(?<!\bal)(?<!\bcf)\.(?=\s+[A-Z(]|$)", text)
    return text[:m.end()] if m else text
