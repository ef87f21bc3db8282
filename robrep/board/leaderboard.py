"""Publishing: merge results CSVs of runs into the leaderboard, one CSV per data set and threat model.

The leaderboard is data (RobustBench's lesson): ``leaderboard/<dataset>-<norm>.csv`` holds the
rows, deduplicated on their key and sorted, numbers as numbers; ``<dataset>-<norm>.md`` and
``.png`` are generated from it, never edited by hand. The image grids a run wrote (``robrep
bench --images``: clean and adversarial images and their reconstructions) are copied to
``images/``. A results file that lacks required columns, holds numbers that are not numbers
in [0, 1], or has a row that failed a blocking check (``BLOCKING``) is refused whole.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from robrep.board.admission import admission_errors, safe_name
from robrep.io import atomic_write
from robrep.board.plots import plot_robustness
from robrep.rows.files import merge, read_results, write_results
from robrep.rows.layout import KEY, ResultsError, is_false, is_missing

log = logging.getLogger(__name__)

LOCAL_ONLY = ("checkpoint",)  # paths on the machine that ran it: meaningless to a reader


class LeaderboardError(ValueError):
    """A results file cannot be published; the message says why."""


# A row that fails one of these is evidence of a broken attack or model: never published. A row that only
# failed convergence is published with its warning (and checks_passed False), so readers see it.
BLOCKING = ("check_noise_floor", "check_explored", "check_guards", "check_consistent")


def known_datasets() -> set[str]:
    """The data sets a board may be named after: the registered ones (plugins' included) and their
    validation views."""
    import robrep.data  # noqa: F401  (registers the built-in data sets)
    from robrep.data.splits import SUFFIX
    from robrep.registry import DATASETS

    names = set(DATASETS.list())
    return names | {n + SUFFIX for n in names}


def validate(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """Rows as ``read_results`` gives them (each already checked against the row layout) that may be
    published: every row admitted (``robrep.board.admission``: safe names, complete provenance, consistent numbers,
    checks that recompute from the row) and no row failed a blocking check. One row that is not refuses the
    file whole, with the reasons of each such row. Returns the rows without the machine-local columns."""
    errors = admission_errors(df, known_datasets())
    if errors:
        lines = [f"  line {i + 2} ({df.at[i, 'run']} / {df.at[i, 'task']} / {df.at[i, 'attack']} / radius "
                 f"{df.at[i, 'radius']}): " + "; ".join(reasons) for i, reasons in sorted(errors.items())]
        shown = lines[:20] + ([f"  ... and {len(lines) - 20} more"] if len(lines) > 20 else [])
        raise LeaderboardError(f"{source} cannot be published: {len(errors)} of {len(df)} row(s) are not "
                               "admissible, nothing was written:\n" + "\n".join(shown))
    def refused(row: dict) -> bool:
        if any(is_false(row.get(c)) for c in BLOCKING):
            return True
        old_layout = all(is_missing(row.get(c)) for c in BLOCKING)
        return old_layout and not bool(row["checks_passed"])

    bad_rows = pd.Series([refused(r) for r in df.to_dict("records")], index=df.index, dtype=bool)
    if bad_rows.any():
        bad = df[bad_rows]
        where = ", ".join(sorted(set(bad["run"].astype(str) + "/" + bad["task"].astype(str) + "/"
                                     + bad["attack"].astype(str))))
        raise LeaderboardError(f"{source} cannot be published: {len(bad)} row(s) failed their checks ({where})")
    return df.drop(columns=[c for c in LOCAL_ONLY if c in df.columns])


def drop_superseded(board: pd.DataFrame) -> pd.DataFrame:
    """Drop worst-case rows whose attacks are a strict subset of another worst case's on the same points.

    A worst case over more attacks is the better bound, so a run published again with more
    suites replaces its older, partial worst case instead of standing beside it.
    """
    worst = board[board["suite"] == "worst-case"]
    if worst.empty:
        return board
    same = [c for c in KEY if c not in ("suite", "attack", "attack_config")]
    drop = []
    for _, group in worst.groupby(same, sort=False, dropna=False):
        sets = {i: frozenset(json.loads(c)) for i, c in group["attack_config"].items()}
        drop += [i for i, a in sets.items() if any(a < b for b in sets.values())]
    if drop:
        log.info("dropped %d worst-case row(s) superseded by a worst case over more attacks", len(drop))
    return board.drop(index=drop).reset_index(drop=True)


def board_path(out: Path, dataset: str, norm: str) -> Path:
    """``<out>/<dataset>-<norm>.csv``; refuses names that would leave ``out`` (the admission rules already
    refuse them: this is the last guard before a file is written)."""
    if not (safe_name(dataset) and safe_name(norm)):
        raise LeaderboardError(f"refusing to name a board after dataset {dataset!r}, norm {norm!r}: not plain names")
    path = Path(out) / f"{dataset}-{norm}.csv"
    if path.resolve().parent != Path(out).resolve():
        raise LeaderboardError(f"refusing to write {path}: outside {out}")
    return path


# A run's rows on one set of test points and probe labels under one protocol: what ``publish(replace=True)``
# replaces whole, in every section (the same run on the same points under another protocol, e.g. a figure's
# per-attack run, is another experiment and stays where it is).
RUN_GROUP = ["run", "dataset", "task", "n_examples", "seed", "label_fraction", "probe", "protocol"]
# A run under one protocol and probe, all its tasks: what a standard board admits or refuses whole.
ENTRY = ["run", "dataset", "norm", "n_examples", "seed", "label_fraction", "probe", "protocol"]  # protocol: cascade or not
EXPERIMENTS, ARCHIVE = "experiments", "archive"  # sub-boards: published, never ranked with a standard board


def board_folder(out: str | Path, where: str) -> Path:
    """Where the boards of ``where`` ("standard", EXPERIMENTS or ARCHIVE) live in leaderboard folder ``out``."""
    return Path(out) if where == "standard" else Path(out) / where


def standing(rows: pd.DataFrame) -> tuple[str, list[str]]:
    """Where an entry's rows (one ``ENTRY``) belong: ``"standard"`` (every field of the board's protocol
    matches, every check passed, and ``robrep verify`` held for every claim), ``ARCHIVE`` (rows from before the
    checks were recorded) or ``EXPERIMENTS``; with the reasons it is not standard."""
    from robrep.protocols import PROTOCOLS

    if all(is_missing(v) for c in BLOCKING for v in rows.get(c, [])):
        return ARCHIVE, ["recorded before the checks existed (an earlier protocol)"]
    dataset, norm = rows["dataset"].iloc[0], rows["norm"].iloc[0]
    protocol = PROTOCOLS.get(f"{dataset}-{norm}")
    if protocol is None:
        return EXPERIMENTS, [f"no standard protocol for {dataset} under {norm}"]
    reasons = protocol.mismatches(rows)
    unverified = _unverified(rows, protocol)
    reasons += [unverified] if unverified else []
    return ("standard" if not reasons else EXPERIMENTS), reasons


def _unverified(rows: pd.DataFrame, protocol) -> str | None:
    """Why an entry's claims (its worst-case rows) lack verdicts that held at the protocol's verify budget with
    the margin attack; None if every claim has one."""
    from robrep.protocols import verdict_holds

    worst = rows[rows["suite"] == "worst-case"]
    verdicts = worst["verified"].astype(object).fillna("").astype(str) if "verified" in worst else pd.Series([""] * len(worst))
    held = [verdict_holds(v, protocol, int(n)) for v, n in zip(verdicts, worst["n_classes"])]
    if not len(worst) or all(held):
        return None
    missing = int((verdicts == "").sum())
    return (f"robrep verify: {missing} claim(s) without a verdict" if missing else
            f"robrep verify: {len(held) - sum(held)} claim(s) without a verdict that held at "
            f"{protocol.verify['steps']} x {protocol.verify['restarts']} with the margin attack")


def needs_verdict(rows: pd.DataFrame) -> bool:
    """Whether an entry of ``rows`` matches its standard protocol in every field and check but lacks
    ``robrep verify``'s verdicts (the publishing command runs verify for it)."""
    from robrep.protocols import PROTOCOLS

    for _, entry in rows.groupby(ENTRY, sort=False, dropna=False):
        protocol = PROTOCOLS.get(f"{entry['dataset'].iloc[0]}-{entry['norm'].iloc[0]}")
        if protocol is not None and not protocol.mismatches(entry) and _unverified(entry, protocol):
            return True
    return False


def route(rows: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """Rows split by where they belong (``standing``), per entry: {"standard" | EXPERIMENTS | ARCHIVE: (rows,
    one line per entry that is not standard, with its reasons)}."""
    parts: dict[str, list] = {}
    notes: dict[str, list[str]] = {}
    for key, entry in rows.groupby(ENTRY, sort=True, dropna=False):
        where, reasons = standing(entry)
        parts.setdefault(where, []).append(entry)
        if reasons:
            notes.setdefault(where, []).append(f"{key[0]} on {key[1]} ({key[2]}, {key[3]} points, labels "
                                               f"{float(key[5]):g}): " + "; ".join(reasons))
    return {w: (pd.concat(frames, ignore_index=True), notes.get(w, [])) for w, frames in parts.items()}


def publish(results: list[str | Path], out: str | Path = "leaderboard", replace: bool = False) -> list[Path]:
    """Merge results CSVs (files, or run folders holding results.csv) into ``out``; returns the boards written.

    With ``replace``, the board's rows of every run group (``RUN_GROUP``) the new rows have are dropped first,
    so a run republished under a new protocol or on another machine (other encoder SHA-256s) replaces its
    old rows instead of standing beside them.

    A run folder's image grids (``<run>/images/*.png``) are copied to ``<out>/images/``. Every input and every
    board is read and checked before the first file is written: a refusal leaves ``out`` as it was."""
    from robrep.folders import check_folder

    check_folder(out, "leaderboard")
    frames, grids = [], []
    for item in map(Path, results):
        path = item / "results.csv" if item.is_dir() else item
        if item.is_dir():
            grids += sorted((item / "images").glob("*.png"))
        if not path.is_file():
            raise LeaderboardError(f"no results file at {path}")
        try:
            df = read_results(path)
        except ResultsError as e:
            raise LeaderboardError(f"{path} cannot be published: {e}") from e
        invalid = df.attrs.get("invalid", [])
        if invalid:  # a row cut short, junk, or without provenance: the file is refused whole
            file, line, reason = invalid[0]
            raise LeaderboardError(f"{path} cannot be published: {len(invalid)} row(s) do not fit the row layout "
                                   f"(types, numbers in [0, 1], provenance); the first, {file}:{line}, {reason}")
        frames.append(validate(df, str(path)))  # refuse before anything is written
        if item.is_dir():  # a certified number must hold point by point against the run's own attacks
            from robrep.rows.masks import unsound_certificates

            unsound = unsound_certificates(item, df)
            if unsound:
                raise LeaderboardError(f"{item} cannot be published: {unsound[0]}"
                                       + (f" (and {len(unsound) - 1} more)" if len(unsound) > 1 else ""))
    boards = []
    routed = route(pd.concat(frames, ignore_index=True))
    for where in ("standard", EXPERIMENTS, ARCHIVE):
        rows, notes = routed.get(where, (None, []))
        for note in notes:
            log.warning("published under %s/, not ranked on a standard board: %s", where, note)
        # with replace, a republished run lives in one section only: its old rows leave the others
        elsewhere = [r for w, (r, _) in routed.items() if w != where] if replace else []
        if rows is not None or elsewhere:
            boards += _merged(board_folder(out, where), rows, replace,
                              gone=pd.concat(elsewhere, ignore_index=True) if elsewhere else None)
    written = _write(boards)
    for grid in grids:  # same name, same bytes: publishing twice changes nothing
        atomic_write(Path(out) / "images" / grid.name, grid.read_bytes())
        log.info("leaderboard image %s", Path(out) / "images" / grid.name)
    if (Path(out) / "index.html").is_file():  # a published web page follows its boards
        from robrep.board.site import write_site

        write_site(read_boards(out), out)
    return written



def _merged(folder: Path, new: pd.DataFrame | None, replace: bool, whole: bool = False,
            gone: pd.DataFrame | None = None) -> list[tuple[Path, pd.DataFrame, str]]:
    """Each board of ``folder`` that ``new``'s rows go to, merged with them (nothing written yet); ``whole``: the
    rows are the board's whole content (its file is not read). With ``replace``, the board's rows of ``new``'s
    run groups (``RUN_GROUP``) are dropped first, and so are those of ``gone`` (rows published to another
    section) from the boards of ``folder`` that hold any."""
    empty = (new if new is not None else gone).iloc[:0]
    new = new if new is not None else empty
    gone = gone if gone is not None else empty
    boards = []
    for (dataset, norm), both in pd.concat([new, gone], ignore_index=True).groupby(["dataset", "norm"]):
        rows = new[(new["dataset"] == dataset) & (new["norm"] == norm)]
        path = board_path(folder, dataset, norm)
        if rows.empty and not path.is_file():
            continue
        try:
            old = None if whole else read_results(path)
        except ResultsError as e:
            raise LeaderboardError(f"{path} is in the way of the board robrep would write there: {e}") from None
        if replace and old is not None and not old.empty:
            groups = set(both[RUN_GROUP].astype(str).itertuples(index=False, name=None))
            mine = [g in groups for g in old[RUN_GROUP].astype(str).itertuples(index=False, name=None)]
            if rows.empty and not any(mine):
                continue
            log.info("%s: %d row(s) of the republished runs replaced", path, sum(mine))
            old = old[[not m for m in mine]]
        elif rows.empty:
            continue
        board = drop_superseded(merge(old, rows))
        board = board.drop(columns=[c for c in LOCAL_ONLY if c in board.columns])
        if board.empty:  # every row left for another section: the board goes
            boards.append((path, None, None))
            continue
        boards.append((path, board, render_markdown(with_entries(board, folder), board_title(folder, dataset, norm))))
    return boards


def _write(boards: list[tuple[Path, pd.DataFrame | None, str | None]]) -> list[Path]:
    """Write each board (CSV, Markdown, plot); a board of None is removed (its rows live elsewhere now)."""
    written = []
    for path, board, markdown in boards:
        if board is None:
            for suffix in (".csv", ".md", ".png"):
                path.with_suffix(suffix).unlink(missing_ok=True)
            continue
        write_results(path, board)
        _render(board, path, markdown)
        log.info("leaderboard %s: %d rows", path, len(board))
        written.append(path)
    return written


def board_title(folder: Path, dataset: str, norm: str) -> str:
    """A board's title; an experiments or archive board says it is never ranked with the standard board."""
    sub = folder.name if folder.name in (EXPERIMENTS, ARCHIVE) else ""
    return f"{dataset}, {norm} threat model" + (f" ({sub}: not ranked with the standard board)" if sub else "")

def _render(board: pd.DataFrame, path: Path, markdown: str) -> None:
    """A board's Markdown and PNG beside its CSV at ``path`` (entries shown by their names)."""
    atomic_write(path.with_suffix(".md"), markdown.encode())
    plot_robustness(with_entries(board, path.parent), path.with_suffix(".png"))


def render_boards(out: str | Path = "leaderboard") -> list[Path]:
    """Write every board's Markdown and PNG again from its CSV (after robrep's rendering changed), the standard
    boards' and those under ``experiments/`` and ``archive/``; the CSVs, and so the published rows, are not
    touched. Returns the boards rendered."""
    done = []
    for folder in (board_folder(out, w) for w in ("standard", EXPERIMENTS, ARCHIVE)):
        for path in sorted(folder.glob("*.csv")):
            board = read_results(path)
            if board is None or board.empty or not set(KEY) <= set(board.columns):
                continue
            dataset, norm = board["dataset"].iloc[0], board["norm"].iloc[0]
            if board_path(folder, dataset, norm) != path:
                raise LeaderboardError(f"{path} holds {dataset} / {norm} rows: not a board robrep wrote")
            _render(board, path, render_markdown(with_entries(board, folder), board_title(folder, dataset, norm)))
            log.info("rendered %s", path.with_suffix(".md"))
            done.append(path)
    return done


def resort(out: str | Path = "leaderboard") -> dict[str, list[str]]:
    """Move every published row to where it belongs now (``standing``): a standard board keeps only the entries
    of its protocol; the others go to ``experiments/`` or ``archive/``. Nothing is dropped. Returns the notes
    per destination (one line per entry that is not standard)."""
    from robrep.folders import check_folder

    check_folder(out, "leaderboard")
    folders = [board_folder(out, w) for w in (ARCHIVE, EXPERIMENTS, "standard")]
    everything = [b for b in (read_results(p) for f in folders for p in sorted(f.glob("*.csv")))
                  if b is not None and not b.empty]
    if not everything:
        return {}
    rows = None
    for board in everything:  # one row per key; where two boards hold it, the standard board's (verified) wins
        rows = merge(rows, board)
    routed = route(rows)
    boards = []
    for where in ("standard", EXPERIMENTS, ARCHIVE):
        folder = board_folder(out, where)
        rows = routed.get(where, (pd.DataFrame(), []))[0]
        for path in sorted(folder.glob("*.csv")):
            if rows.empty or not ((rows["dataset"] + "-" + rows["norm"]) == path.stem).any():
                boards.append((path, None, None))  # emptied: its rows live elsewhere now
        if not rows.empty:
            boards += _merged(folder, rows, replace=False, whole=True)
    _write(boards)
    return {w: notes for w, (_, notes) in routed.items() if notes}


def read_board(out: str | Path, name: str) -> pd.DataFrame | None:
    """The rows of board ``name`` in ``out`` (``experiments/<name>`` for a sub-board), or None if there is none."""
    return read_results(Path(out) / f"{name}.csv")


def read_boards(out: str | Path = "leaderboard") -> pd.DataFrame:
    boards = [read_results(p) for p in sorted(Path(out).glob("*.csv"))]
    boards = [b for b in boards if b is not None and set(KEY) <= set(b.columns)]
    if not boards:
        where = Path(out).resolve()
        raise LeaderboardError(
            f"no leaderboard CSVs in {where}{'' if where.is_dir() else ' (no such folder)'}: boards are read from "
            "--out (default ./leaderboard, the folder of that name in a clone of robrep's repository). Give the "
            "folder of a board with --out PATH, or start one there by publishing a run: robrep leaderboard "
            "RUN/results.csv --out PATH")
    return with_entries(pd.concat(boards, ignore_index=True), out)


def with_entries(board: pd.DataFrame, out: str | Path, named: bool = True) -> pd.DataFrame:
    """The board's rows with what each entry is (``robrep.board.entries``: ``entry_name``, ``family``,
    ``variant``, ``paper``, ``code``, ``submitter``, ``submitted``); with ``named``, an entry's name is the label
    shown."""
    from robrep.board.entries import FIELDS, read_entries

    entries = read_entries(out)
    if not entries:
        return board
    board = board.copy()
    for key in FIELDS:
        column = "entry_name" if key == "name" else key
        board[column] = [entries.get(sha, {}).get(key, "") for sha in board["encoder_sha256"]]
    if named:
        board["label"] = board["entry_name"].where(board["entry_name"] != "", board["label"])
    return board


def render_markdown(board: pd.DataFrame, title: str) -> str:
    """One table per task: adversarial accuracy by radius, the worst case where several attacks ran; for a data
    set with many tasks (``MANY_TASKS``), one table with tasks as rows, as the paper's Table 1.

    ``board`` as ``merge`` or ``read_results`` return it (empty fields filled)."""
    from robrep.board.headline import headline_markdown, headline_table
    from robrep.board.tables import many_task_datasets, task_table
    from robrep.escape import markdown as md

    lines = [f"# Leaderboard: {md(title)}", "",
             "Adversarial accuracy (fraction of test points classified correctly under every attack of the suite, "
             "at each L-inf/L2 radius; radius 0 is the clean accuracy). Generated by `robrep leaderboard`; "
             "do not edit by hand.", ""]
    lines += ["One row per encoder and protocol (test points, probe labels, attacks), ranked by the worst case over "
              "every attack of the protocol at the headline radius; an encoder without one is shown by its strongest "
              "single attack (an upper bound). The per-attack detail follows.", ""]
    lines += headline_markdown(headline_table(board))
    lines += ["# Per-attack detail", ""]

    many = many_task_datasets(board)
    if many:  # the paper's Table 1: tasks as rows
        for dataset in many:
            tt = task_table(board[board["dataset"] == dataset])
            learners = list(dict.fromkeys(lab for lab, _ in tt.columns))
            lines += [f"## {md(dataset)}: nominal / adversarial accuracy at radius {tt.attrs['radius']:g}", "",
                      "Adversarial: the worst case over every attack of the run"
                      + (f"; for {', '.join(map(md, tt.attrs['single_attack']))}, the strongest single attack (an upper "
                         "bound)" if tt.attrs["single_attack"] else "")
                      + ". Each attack's own row is in the CSV beside this file.", "",
                      "| task | " + " | ".join(f"{md(lab)} nominal | {md(lab)} adversarial" for lab in learners) + " |",
                      "|---|" + "---:|---:|" * len(learners)]
            for task, vals in tt.iterrows():
                lines.append(f"| {md(task)} | " + " | ".join("" if v != v else f"{v:.3f}" for v in vals) + " |")
            lines.append("")
        board = board[~board["dataset"].isin(many)]
    for task, rows in board.groupby("task", sort=True):
        radii = sorted(rows["radius"].unique())
        lines += [f"## {md(task)}", "",
                  "| learner | arch | run | probe | suite | attack | n | labels | " + " | ".join(f"{r:g}" for r in radii)
                  + " |", "|---|---|---|---|---|---|---:|---:|" + "---:|" * len(radii)]
        keys = ["label", "arch", "run", "probe", "suite", "attack", "n_examples", "label_fraction", "attack_config"]
        for (label, arch, run, probe, suite, attack, n, fraction, config), g in rows.groupby(keys, sort=True,
                                                                                          dropna=False):
            acc = g.set_index("radius")["adversarial_accuracy"]
            cells = [f"{acc[r]:.3f}" if r in acc.index else "" for r in radii]
            parsed = json.loads(config)
            if suite == "worst-case":  # several worst cases can differ in the attacks they cover
                covered = [a for a in parsed if a != "cascade"]
                attack = f"worst case of {len(covered)} attacks" + (" (cascade)" if "cascade" in parsed else "")
            elif "cascade_after" in parsed:  # a cascade's stage: the accuracy so far
                attack = f"{attack} (cascade stage {len(parsed['cascade_after']['attacks']) + 1}, with the attacks before it)"
            lines.append(f"| {md(label)} | {md(arch)} | {md(run)} | {md(probe)} | {md(suite)} | {md(attack)} | {n} | "
                         f"{fraction:g} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
