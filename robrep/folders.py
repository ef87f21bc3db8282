"""What robrep owns in a folder it writes, checked before the first byte is written.

Every command that writes a folder checks it first with ``check_folder(out, kind)``, which reads
and writes nothing the user can see: the folder must be a folder (or creatable), writable, and

- every entry whose name robrep writes in that kind of folder must *be* robrep's (a results file,
  a config, a checkpoint, a PNG that reads as one), since the command would replace or extend it;
  such an entry that is not is refused, with or without ``force``;
- a run folder (``bench`` or a sweep's, ``checkpoint``, ``toy``) holding anything else is refused,
  naming it, unless ``force`` (the command then writes beside those entries and never touches them).

So a refused command leaves the folder exactly as it found it, and no command overwrites or
deletes a file robrep did not write. A folder robrep made earlier (any version) passes as it is:
ownership is read from the files themselves, not from a marker.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from robrep.validate import ConfigError

PNG = b"\x89PNG\r\n\x1a\n"


class FolderError(ConfigError):
    """A destination folder robrep will not write into; says which entry and why."""


# --- what makes a file robrep's (None: it is; else the reason it is not) ------------------------------------

def _png(path: Path) -> str | None:
    with open(path, "rb") as fh:
        return None if fh.read(8) == PNG else "not a PNG image"


def _results_csv(path: Path) -> str | None:
    from robrep.rows.files import read_results
    from robrep.rows.layout import ResultsError

    store = path.with_name("results.sqlite")
    if store.is_file() and _sqlite_header(store):  # the store's export: the store is the record (checked on its
        return None  # own), and a damaged export is written again from it
    try:
        read_results(path)
    except ResultsError as e:
        return str(e)
    return None


def _sqlite_header(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(16) == b"SQLite format 3\x00"


def _results_db(path: Path) -> str | None:
    if not _sqlite_header(path):
        return "not a SQLite database"
    # read from a copy: opening a WAL database, even read-only, may create files beside it
    with tempfile.TemporaryDirectory(prefix="robrep-check-") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        if path.with_name(path.name + "-wal").is_file():
            shutil.copyfile(path.with_name(path.name + "-wal"), Path(tmp) / (path.name + "-wal"))
        try:
            conn = sqlite3.connect(copy)
            try:
                ok = conn.execute("PRAGMA quick_check").fetchone()[0]
                cols = [r[1] for r in conn.execute("PRAGMA table_info(rows)")]
            finally:
                conn.close()
        except sqlite3.DatabaseError as e:
            return f"a damaged SQLite database ({e})"
    if ok != "ok":
        return f"a damaged SQLite database ({ok})"
    return None if cols in ([], ["key", "data"]) else f"a SQLite database with other tables (rows: {cols})"


def _bench_toml(path: Path) -> str | None:
    from robrep.harness.config import BenchConfig, tomllib  # up: a bench folder's config is whatever BenchConfig reads

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return f"not TOML ({e})"
    data = data.get("bench", data)
    known = {f.name for f in dataclasses.fields(BenchConfig)}
    if not set(data) & known:  # an older robrep's config may hold a key this one dropped, but never none of them
        return f"not a robrep bench config (keys {', '.join(sorted(data)) or 'none'})"
    return None


def _json_with(*keys: str) -> Callable[[Path], str | None]:
    def check(path: Path) -> str | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"not JSON ({e})"
        if not isinstance(data, dict) or not set(keys) <= set(data):
            return f"not robrep's (a JSON object with {', '.join(keys)} expected)"
        return None
    return check


def _csv_header(*columns: str) -> Callable[[Path], str | None]:
    def check(path: Path) -> str | None:
        try:
            with open(path, encoding="utf-8") as fh:
                header = fh.readline().strip().split(",")
        except UnicodeDecodeError:
            return "not a text file"
        return None if header[:len(columns)] == list(columns) else f"not robrep's (its header is {header!r})"
    return check


def _checkpoint_config(path: Path) -> str | None:
    from robrep.checkpoint import CheckpointError, read_config

    try:
        read_config(path.parent)
    except CheckpointError as e:
        return str(e)
    return None


def _folder(path: Path) -> str | None:
    return None if path.is_dir() else "a file where robrep keeps a folder"


def _board_page(path: Path) -> str | None:
    with open(path, "rb") as fh:
        return None if b"<title>robrep leaderboard</title>" in fh.read(4096) else "not robrep's leaderboard page"


def _any(path: Path) -> str | None:
    return None


@dataclass(frozen=True)
class FolderKind:
    """A kind of folder robrep writes: the entries it owns (fnmatch pattern -> check) and whether anything else
    in it is refused (a run folder) or left alone (a folder shared with other files, e.g. a leaderboard)."""

    name: str
    owned: dict[str, Callable[[Path], str | None]] = field(default_factory=dict)
    exclusive: bool = True

    def check_of(self, name: str) -> Callable[[Path], str | None] | None:
        if name.startswith(".") and name.endswith(".tmp"):  # an atomic write a kill cut short
            return _any
        if name in LEFT_BY_SYSTEMS or name.startswith(".nfs"):  # never robrep's, never touched, never in the way
            return _any
        for pattern, check in self.owned.items():
            if fnmatch.fnmatchcase(name, pattern):
                return check
        return None


# what file browsers, notebooks and network file systems leave in any folder
LEFT_BY_SYSTEMS = {".DS_Store", "Thumbs.db", "desktop.ini", ".ipynb_checkpoints"}

_BENCH = {
    "results.csv": _results_csv, "results.sqlite": _results_db, "results.sqlite-wal": _any,
    "results.sqlite-shm": _any, "results.sqlite-journal": _any, "results.sqlite.import-*": _any,
    "results.csv.orig*": _any,
    "results-rejected.csv": _csv_header("file", "line", "reason", "text"), "config.toml": _bench_toml,
    "robustness.png": _png, "probes": _folder, "examples": _folder, "inbox": _folder, "images": _folder,
    ".robrep-write-test-*": _any, ".robrep-shared-*": _any,
    # a sweep is a bench on the validation view, with its table and its choice beside the rows
    "sweep.csv": _csv_header("label"), "choice.json": _json_with("learner", "choice"),
}
KINDS = {
    "bench": FolderKind("bench", _BENCH),
    "checkpoint": FolderKind("checkpoint", {"config.json": _checkpoint_config, "model.safetensors": _any}),
    "toy": FolderKind("toy", {"toy.png": _png, "toy.csv": _csv_header("learner", "elbo")}),
    "leaderboard": FolderKind("leaderboard", {"*.csv": _results_csv, "*.png": _png, "index.html": _board_page,
                                              "encoders": _folder, "images": _folder, "experiments": _folder,
                                              "archive": _folder}, exclusive=False),
}


def check_folder(out: str | Path, kind: str, *, force: bool = False, option: str = "--out") -> Path:
    """Check ``out`` as a destination of ``kind`` (see the module docstring) without changing anything in it;
    raises ``FolderError`` saying what was found and what was expected. Returns ``out`` as a Path."""
    out, spec = Path(out), KINDS[kind]
    if out.exists() and not out.is_dir():
        raise FolderError(f"{option} {out} is a file, not a folder: give a folder (new or robrep's own)")
    _check_writable(out, option)
    if not out.is_dir():
        return out
    foreign, bad = [], []
    for entry in sorted(out.iterdir()):
        check = spec.check_of(entry.name)
        if check is None:
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
            continue
        try:
            file_expected = check is not _any and check is not _folder
            why = "a folder where robrep keeps a file" if file_expected and entry.is_dir() else check(entry)
        except OSError as e:
            why = f"cannot be read ({e.strerror or e})"
        if why is not None:
            bad.append(f"{entry.name} ({why})")
    if bad:
        raise FolderError(f"{option} {out} holds {'; '.join(bad)}: robrep would write over "
                          f"{'it' if len(bad) == 1 else 'them'}, so it refuses; move {'it' if len(bad) == 1 else 'them'}"
                          f" away or choose another folder")
    if foreign and spec.exclusive and not force:
        shown = ", ".join(foreign[:6]) + (f" and {len(foreign) - 6} more" if len(foreign) > 6 else "")
        raise FolderError(f"{option} {out} holds files robrep did not write ({shown}); choose a new or empty "
                          f"folder, or give --force to write beside them (robrep never touches them)")
    return out


def _check_writable(out: Path, option: str) -> None:
    """``out`` can be created (if missing) and written: a file is made, for real, in ``out`` or, where ``out`` does
    not exist yet, in its nearest existing folder (which would hold it), then removed, so nothing is left. No
    folder is created and removed here: another command starting on the same new folder would race with that."""
    existing = out
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise FolderError(f"{option} {out} cannot be created: {existing} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=existing, prefix=".robrep-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        where = "" if existing == out else f" (nor created in {existing})"
        raise FolderError(f"{option} {out} cannot be written{where}: {e.strerror or e}") from None


__all__ = ["FolderError", "FolderKind", "KINDS", "check_folder"]
