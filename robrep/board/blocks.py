"""Numbers in prose, generated from the published boards: never typed by hand.

A Markdown file (the README, a page of the documentation) marks each generated part::

    <!-- robrep:table board=mnist5k-linf task=digit radii=0.05,0.1 n=5 -->
    ...the table, written by `robrep leaderboard --render`...
    <!-- /robrep -->

    The SE keeps <!-- robrep:value board=mnist5k-linf task=digit label=se-adversarial arch=mlp radius=0.1 -->0.494<!-- /robrep -->
    of the digits.

``render_blocks`` fills every block from the board CSVs in a folder; ``stale_blocks`` says which blocks of a
file differ from what the boards give (the tests fail on any: a number changed by hand, or a board republished
without rendering the prose again).

Kinds:

- ``table``: rows of a board's headline table (filtered by any of ``FILTERS``, comma-separated values allowed),
  ranked by robust accuracy at ``radius`` (default 0.1, else the last of ``radii``), the first ``n`` if given: clean
  accuracy, robust accuracy at each radius, how it was measured and the test points;
- ``value``: one number of the headline table: the robust accuracy of encoder ``label`` (and ``arch``, ``run``
  where several rows match) at ``radius``, or with ``what=clean`` its clean accuracy. A selection that matches
  no row or several is an error naming the candidates, never a guess;
- ``attacks``: each attack's own robust accuracy at ``radius`` and the worst case, one column per encoder;
- ``timing``: a time a benchmark script wrote (``file``, ``key``; ``unit=min`` for minutes, ``unit=h`` for a value
  written in hours);
- ``protocols``: the standard protocols, with the time one entry took on each board;
- ``jsontable``: a table of the records a benchmark script wrote as JSON (``file``; the list under ``key``,
  default ``rows``): ``columns`` (comma-separated), headed by ``headers`` if given; the columns in ``shares``
  (accuracies) with three decimals, other numbers as they are;
- ``families``: the learners of a board compared (``robrep.board.families``: family, labels, clean and robust
  accuracy at the headline radius with each probe, training time against the VAE's), for ``arch`` (default mlp)
  and ``task``; with ``name``, also its figure (clean against robust accuracy) written as ``plot`` does;
- ``standing``: one sentence saying where the Smooth Encoder stands among the board's learners;
- ``provable``: one sentence saying at which radii learner ``better``'s certified robust accuracy is above learner
  ``worse``'s attacked one (``robrep.board.sandwich``), for ``task`` and ``arch``;
- ``plot``: a figure of a board's rows (filtered as a table's), robust accuracy against the radius per encoder,
  written as ``figures/<name>.png`` beside the board's CSV and linked from the block, whose text carries a hash of
  the rows plotted (so the stale check sees a board that changed under a figure).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd

OPEN = re.compile(r"<!-- robrep:(?P<kind>[a-z]+)(?P<args>[^>]*?)-->")
CLOSE = "<!-- /robrep -->"


class BlockError(ValueError):
    """A generated block that cannot be filled: an unknown kind or board, or a selection that is not one row."""


def _args(text: str, where: str) -> dict[str, str]:
    args = {}
    for part in shlex.split(text):
        key, eq, value = part.partition("=")
        if not eq:
            raise BlockError(f"{where}: expected key=value, got {part!r}")
        args[key] = value
    return args


class Boards:
    """The boards of a leaderboard folder and their headline tables, read once each."""

    def __init__(self, folder: str | Path, write: bool = False):
        self.folder = Path(folder)
        self.write = write  # write the figures of plot blocks (render), or only check that they exist (stale check)
        self._rows: dict[str, pd.DataFrame] = {}
        self._tables: dict[str, pd.DataFrame] = {}

    def rows(self, name: str) -> pd.DataFrame:
        if name not in self._rows:
            from robrep.board.leaderboard import read_board

            path = self.folder / f"{name}.csv"
            board = read_board(self.folder, name)
            if board is None or board.empty:
                raise BlockError(f"no board {name!r} in {self.folder} (expected {path})")
            self._rows[name] = board
        return self._rows[name]

    def headline(self, name: str) -> pd.DataFrame:
        """The board's headline table, with each entry's name (``entries.toml``) where it has one."""
        if name not in self._tables:
            from robrep.board.headline import headline_table
            from robrep.board.leaderboard import with_entries

            table = headline_table(self.rows(name))
            named = with_entries(table, (self.folder / name).parent, named=False) if len(table) else table
            self._tables[name] = named
        return self._tables[name]


FILTERS = ("task", "label", "learner", "arch", "run", "norm", "n_examples", "label_fraction", "probe")


def _matches(values: pd.Series, wanted: str) -> pd.Series:
    """Rows whose value is one of the comma-separated ``wanted`` (numbers compared as numbers)."""
    options = [w.strip() for w in wanted.split(",")]
    try:
        return values.astype(float).isin([float(o) for o in options])
    except ValueError:
        return values.astype(str).isin(options)


def _rows(boards: Boards, args: dict[str, str], where: str) -> pd.DataFrame:
    rows = boards.headline(args["board"])
    unknown = sorted(set(args) - {"board", "radius", "radii", "n", "what", *FILTERS})
    if unknown:
        raise BlockError(f"{where}: unknown argument(s) {', '.join(unknown)} (filters: {', '.join(FILTERS)})")
    for key in FILTERS:
        if key in args:
            rows = rows[_matches(rows[key], args[key])]
    return rows


def _column(rows: pd.DataFrame, radius: str, where: str) -> str:
    column = f"r={float(radius):g}"
    if column not in rows:
        raise BlockError(f"{where}: the board has no radius {radius}")
    return column


def _value(boards: Boards, args: dict[str, str], where: str) -> str:
    rows = _rows(boards, args, where)
    column = "clean" if args.get("what") == "clean" else _column(rows, args.get("radius", "0.1"), where)
    if len(rows) != 1:
        found = "; ".join(f"{r.label} {r.arch} {r.run} ({r.n_examples} points, labels {r.label_fraction:g})"
                          for r in rows.itertuples())
        raise BlockError(f"{where}: {len(rows)} rows match {args} (need exactly one; add arch=, run=, n_examples= "
                         f"or label_fraction=): {found or 'none'}")
    value = rows.iloc[0][column]
    return "n/a" if value != value else f"{value:.3f}"


def _table(boards: Boards, args: dict[str, str], where: str) -> str:
    from robrep.escape import markdown as md

    rows = _rows(boards, args, where)
    if rows.empty:
        raise BlockError(f"{where}: no rows match {args}")
    columns = [_column(rows, r, where) for r in args.get("radii", args.get("radius", "0.1")).split(",")]
    rank = _column(rows, args.get("radius", "0.1" if "r=0.1" in columns else columns[-1][2:]), where)
    rows = rows.sort_values([rank, "clean"], ascending=False, kind="mergesort", na_position="last")
    rows = rows.head(int(args["n"])) if "n" in args else rows
    labels, tasks = rows["label_fraction"].nunique() > 1, rows["task"].nunique() > 1
    runs = rows.duplicated(["task", "label", "arch", "n_examples", "label_fraction", "probe"]).any()  # tell apart
    lines = ["| " + ("task | " if tasks else "") + "encoder | " + ("run | " if runs else "") + "arch | clean | "
             + " | ".join(f"robust at {c[2:]}" for c in columns) + " | measured by | test points |"
             + (" labels |" if labels else ""),
             "|" + ("---|" if tasks else "") + ("---|" if runs else "") + "---|---|---:|" + "---:|" * len(columns) + "---|---:|"
             + ("---:|" if labels else "")]
    if tasks:
        rows = rows.sort_values("task", kind="mergesort")
    for _, r in rows.iterrows():
        robust = " | ".join("" if r[c] != r[c] else f"{r[c]:.3f}" for c in columns)
        shown = r.get("entry_name") or r["label"]
        lines.append("| " + (f"{md(r['task'])} | " if tasks else "") + f"{md(shown)} | "
                     + (f"{md(r['run'])} | " if runs else "") + f"{md(r['arch'])} | "
                     f"{r['clean']:.3f} | {robust} | {md(r['measure'])} | {r['n_examples']} |"
                     + (f" {r['label_fraction']:g} |" if labels else ""))
    return "\n" + "\n".join(lines) + "\n"


def _attacks(boards: Boards, args: dict[str, str], where: str) -> str:
    """Each attack's own robust accuracy at ``radius``, one column per encoder (``label`` and ``arch`` filters),
    on the board's rows of one protocol (``n_examples``, ``label_fraction``)."""
    from robrep.escape import markdown as md

    rows = boards.rows(args["board"])
    unknown = sorted(set(args) - {"board", "radius", *FILTERS})
    if unknown:
        raise BlockError(f"{where}: unknown argument(s) {', '.join(unknown)} (filters: {', '.join(FILTERS)})")
    rows = rows[rows["radius"] == float(args.get("radius", "0.1"))]
    for key in FILTERS:
        if key in args:
            rows = rows[_matches(rows[key], args[key])]
    if rows.empty:
        raise BlockError(f"{where}: no rows match {args}")
    encoders = list(dict.fromkeys(zip(rows["label"], rows["arch"], rows["run"])))
    names = rows["suite"].where(rows["suite"] == "worst-case", rows["suite"] + " " + rows["attack"].str.split("(").str[0])
    rows = rows.assign(name=names.str.strip())
    twice = rows.groupby(["name", "run"]).size()
    if (twice > 1).any():
        raise BlockError(f"{where}: several rows per attack and encoder ({', '.join(twice[twice > 1].index.map(str))}): "
                         "narrow the selection (n_examples=, label_fraction=, run=)")
    order = sorted(rows["name"].unique(), key=lambda n: (n == "worst-case", n))
    lines = ["| attack | " + " | ".join(f"{md(label)} ({md(arch)})" for label, arch, _ in encoders) + " |",
             "|---|" + "---:|" * len(encoders)]
    for name in order:
        cells = []
        for _, _, run in encoders:
            hit = rows[(rows["name"] == name) & (rows["run"] == run)]["adversarial_accuracy"]
            cells.append(f"{hit.iloc[0]:.3f}" if len(hit) else "")
        shown = "**worst case**" if name == "worst-case" else md(name)
        lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    return "\n" + "\n".join(lines) + "\n"


def _timing(boards: Boards, args: dict[str, str], where: str) -> str:
    """A time a benchmark script measured and wrote as JSON (``file``, relative to the boards' parent folder):
    ``key``'s seconds, shown in ``unit`` (``s`` or ``min``, rounded up to a whole minute; ``h``: the value is in
    hours already, as the script wrote it)."""
    import json
    import math

    path = boards.folder.parent / args.get("file", "")
    try:
        seconds = float(json.loads(path.read_text(encoding="utf-8"))[args["key"]])
    except (OSError, ValueError, KeyError) as e:
        raise BlockError(f"{where}: no time {args.get('key')!r} in {path} ({type(e).__name__}: {e})") from None
    if args.get("unit") == "h":  # a value the script wrote in hours
        return f"{seconds:.0f} hours"
    return f"{math.ceil(seconds / 60)} minutes" if args.get("unit") == "min" else f"{seconds:.0f} s"


def _jsontable(boards: Boards, args: dict[str, str], where: str) -> str:
    """Records a benchmark script measured (``file``, relative to the boards' parent folder) as a table."""
    import json

    from robrep.escape import markdown as md

    path = boards.folder.parent / args.get("file", "")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))[args.get("key", "rows")]
    except (OSError, ValueError, KeyError) as e:
        raise BlockError(f"{where}: no records {args.get('key', 'rows')!r} in {path} ({type(e).__name__}: {e})") from None
    columns = args.get("columns", "").split(",")
    headers = args["headers"].split(",") if "headers" in args else columns
    if not records or len(headers) != len(columns) or any(c not in records[0] for c in columns):
        raise BlockError(f"{where}: {path} has no records with the columns {columns} (and as many headers)")

    shares = set(args.get("shares", "").split(","))

    def cell(column: str, v) -> str:
        if column in shares and isinstance(v, (int, float)):
            return f"{v:.3f}"
        return md(f"{v:g}" if isinstance(v, float) else str(v))

    lines = ["| " + " | ".join(md(h) for h in headers) + " |",
             "|" + "|".join("---:" if isinstance(records[0][c], (int, float)) else "---" for c in columns) + "|"]
    lines += ["| " + " | ".join(cell(c, r[c]) for c in columns) + " |" for r in records]
    return "\n" + "\n".join(lines) + "\n"


def _protocols(boards: Boards, args: dict[str, str], where: str) -> str:
    """The standard protocols (``robrep.protocols``), and what one entry took on each board that has entries:
    training plus every attack cell, from the rows' own seconds (the median and the longest entry)."""
    from robrep.protocols import PROTOCOLS

    lines = ["| board | data set, tasks | threat model | radii (headline) | test points | attacks | time per entry |",
             "|---|---|---|---|---:|---|---:|"]
    for p in PROTOCOLS.values():
        radii = ", ".join(f"**{r:g}**" if r == p.headline else f"{r:g}" for r in p.radii)
        try:
            rows = boards.rows(p.name)
        except BlockError:
            rows = None
        took = ""
        if rows is not None:
            entry = ["run", "probe"]  # an encoder under each probe is an entry of its own
            cells = rows[rows["suite"] != "worst-case"].drop_duplicates(["run", "probe", "task", "suite", "attack"])
            per = cells.groupby(entry)["wall_seconds"].sum() + rows.groupby(entry)["train_seconds"].max().fillna(0)
            took = f"{per.median() / 60:.0f} min median, {per.max() / 60:.0f} min longest ({len(per)} entries)"
        suites = ", ".join(f"native (PGD on {p.loss})" if s == "native" and p.loss != "ce" else s for s in p.suites)
        lines.append(f"| {p.name} | {p.dataset}, {', '.join(p.tasks) if p.tasks else 'every task'} | {p.norm} | "
                     f"{radii} | {p.n_examples} | {suites}, {p.steps} x {p.restarts}, "
                     f"{p.worst_case} | {took or 'no entry yet'} |")
    return "\n" + "\n".join(lines) + "\n"


def _plot(boards: Boards, args: dict[str, str], where: str) -> str:
    """A figure of the board's rows that match the filters (``name`` names its PNG, ``title`` its alt text)."""
    import io as _io

    from robrep.board.leaderboard import with_entries
    from robrep.board.plots import plot_robustness
    from robrep.io import short_hash

    unknown = sorted(set(args) - {"board", "name", "title", *FILTERS})
    if unknown or "name" not in args:
        raise BlockError(f"{where}: a plot block takes board=, name= and title= and the filters "
                         f"({', '.join(FILTERS)}){'; unknown: ' + ', '.join(unknown) if unknown else ''}")
    rows = boards.rows(args["board"])
    for key in FILTERS:
        if key in args:
            rows = rows[_matches(rows[key], args[key])]
    if rows.empty:
        raise BlockError(f"{where}: no rows match {args}")
    board = Path(args["board"])
    link = _figure(boards, args, where, lambda path: plot_robustness(with_entries(rows, (boards.folder / board).parent),
                                                                      path))
    buf = _io.StringIO()
    rows.sort_values(["run", "task", "suite", "attack", "radius"], kind="mergesort").to_csv(buf, index=False)
    return f"\n{link}\n<!-- rows {short_hash(buf.getvalue())} -->\n"


def _figure(boards: Boards, args: dict[str, str], where: str, draw) -> str:
    """The figure ``name`` of a block, in ``figures/`` beside its board: drawn by ``draw(path)`` on render, only
    required to exist on a stale check; returns its Markdown image link."""
    board = Path(args["board"])
    path = boards.folder / board.parent / "figures" / f"{args['name']}.png"
    if boards.write:
        draw(path)
    elif not path.is_file():
        raise BlockError(f"{where}: its figure {path} is missing (robrep leaderboard --render writes it)")
    link = Path(boards.folder.name) / board.parent / "figures" / f"{args['name']}.png"
    return f"![{args.get('title', args['name'])}]({link.as_posix()})"


def _family_rows(boards: Boards, args: dict[str, str], where: str):
    from robrep.board.families import family_table
    from robrep.board.leaderboard import with_entries

    unknown = sorted(set(args) - {"board", "arch", "task", "name", "title"})
    if unknown:
        raise BlockError(f"{where}: unknown argument(s) {', '.join(unknown)} (board, arch, task, name, title)")
    rows = with_entries(boards.rows(args["board"]), (boards.folder / args["board"]).parent, named=False)
    try:
        table = family_table(rows, args.get("arch", "mlp"), args.get("task"))
    except ValueError as e:
        raise BlockError(f"{where}: {e}") from None
    if table.empty:
        raise BlockError(f"{where}: no {args.get('arch', 'mlp')} entries on {args['board']}")
    return table


def _families(boards: Boards, args: dict[str, str], where: str) -> str:
    from robrep.board.families import plot_families
    from robrep.escape import markdown as md

    table = _family_rows(boards, args, where)
    head = table.attrs["headline"]

    def share(v) -> str:
        return "" if v != v else f"{v:.3f}"

    lines = [f"| encoder | family | labels | clean | robust at {head:g} | clean, adversarial probe | "
             f"robust at {head:g}, adversarial probe | training time (VAE = 1) | protocol minutes (standard + adversarial probe) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in table.iterrows():
        lines.append(f"| {md(r['name'])} | {md(r['family'])} | {'yes' if r['uses_labels'] else 'no'} | "
                     f"{share(r['clean_standard'])} | {share(r['robust_standard'])} | {share(r['clean_adversarial'])} "
                     f"| {share(r['robust_adversarial'])} | "
                     f"{'' if r['train_vs_vae'] != r['train_vs_vae'] else format(r['train_vs_vae'], '.1f')} | "
                     + " + ".join(f"{r[k]:.0f}" for k in ("minutes_standard", "minutes_adversarial") if r[k] == r[k])
                     + " |")
    text = "\n" + "\n".join(lines) + "\n"
    if "name" in args:
        text += "\n" + _figure(boards, args, where,
                               lambda path: plot_families(table, path, args.get("title", args["name"]))) + "\n"
    return text


def _standing(boards: Boards, args: dict[str, str], where: str) -> str:
    from robrep.board.families import standing

    return standing(_family_rows(boards, args, where))


def _provable(boards: Boards, args: dict[str, str], where: str) -> str:
    from robrep.board.sandwich import provable

    try:
        return provable(boards.rows(args["board"]), args["better"], args["worse"], args["task"],
                        args.get("arch", "mlp"))
    except (KeyError, ValueError) as e:
        raise BlockError(f"{where}: a provable block takes board=, better=, worse=, task= (and arch=): {e}") from None


KINDS = {"provable": _provable, "families": _families, "standing": _standing, "jsontable": _jsontable, "plot": _plot, "value": _value, "table": _table, "attacks": _attacks, "timing": _timing, "protocols": _protocols}


def render_blocks(text: str, boards: Boards, name: str = "<text>") -> str:
    """``text`` with every generated block filled from ``boards``."""
    out, pos = [], 0
    for m in OPEN.finditer(text):
        if m.start() < pos:
            continue
        end = text.find(CLOSE, m.end())
        line = text.count("\n", 0, m.start()) + 1
        where = f"{name}:{line}"
        if end < 0:
            raise BlockError(f"{where}: a robrep:{m['kind']} block without its {CLOSE}")
        if m["kind"] not in KINDS:
            raise BlockError(f"{where}: unknown block kind {m['kind']!r} (known: {', '.join(KINDS)})")
        args = _args(m["args"], where)
        if "board" not in args and m["kind"] not in ("timing", "protocols", "jsontable"):
            raise BlockError(f"{where}: a robrep:{m['kind']} block needs board=NAME")
        out += [text[pos:m.end()], KINDS[m["kind"]](boards, args, where)]
        pos = end
    return "".join(out) + text[pos:]


def marked_files(root: str | Path) -> list[Path]:
    """The README and documentation pages under ``root`` that hold generated blocks."""
    root = Path(root)
    candidates = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [p for p in candidates if p.is_file() and "<!-- robrep:" in p.read_text(encoding="utf-8")]


def stale_blocks(path: Path, boards: Boards) -> list[str]:
    """The lines of ``path`` whose generated content differs from what ``boards`` give (empty: all current)."""
    text = path.read_text(encoding="utf-8")
    fresh = render_blocks(text, boards, str(path))
    if fresh == text:
        return []
    old, new = text.splitlines(), fresh.splitlines()
    return [f"{path}:{i + 1}: {a!r} should read {b!r}" for i, (a, b) in enumerate(zip(old, new)) if a != b] or \
        [f"{path}: its generated blocks changed length"]


def render_files(root: str | Path, boards_folder: str | Path) -> list[Path]:
    """Fill the generated blocks of every marked file under ``root``; returns the files that changed."""
    from robrep.io import atomic_write

    boards, changed = Boards(boards_folder, write=True), []
    for path in marked_files(root):
        text = path.read_text(encoding="utf-8")
        fresh = render_blocks(text, boards, str(path))
        if fresh != text:
            atomic_write(path, fresh.encode("utf-8"))
            changed.append(path)
    return changed
