"""The results store of a run folder: SQLite in WAL mode, one row per key, for any number of writers.

``<out>/results.sqlite`` is the record; ``<out>/results.csv`` is exported from it, atomically,
after every write, for people and for publishing. Two ``robrep bench`` commands on one folder
(or, later, many ranks) each upsert their rows, so both keep them. Every row is validated
before it is stored and again when it is read (``robrep.rows.parse_row``).

A folder that has a results.csv but no store yet (a run from before the store) is imported
once, all or nothing (``robrep.harness.migrate.import_csv``): its valid rows go into the store;
refused rows are copied, with the reason, to ``results-rejected.csv``, so nothing is lost; the
original CSV is kept as ``results.csv.orig`` before the first export replaces it.

Ranks of a distributed run do not write the store: each finished cell is posted, atomically, as
one file in ``<out>/inbox/`` (``post``), and the one writer (rank 0) moves posted rows into the
store (``collect``), deleting each file only after its rows are committed. A killed rank or node
loses at most the cell it was computing; the next run collects what was posted before it starts.
SQLite is only ever opened by that one writer, so the output folder may be on a network file system.
"""
from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from robrep.io import atomic_write
from robrep.rows.files import frame, keyed_records, plain_records, write_results
from robrep.rows.layout import ResultsError, parse_row

log = logging.getLogger(__name__)


INBOX = "inbox"


def post(out: Path, name: str, rows: pd.DataFrame) -> Path:
    """Post a finished cell's rows for the writer to collect: one file, written atomically (any rank)."""
    records = plain_records(rows)
    for row in records:
        parse_row(row)  # a row that cannot be read back is refused where it is made
    path = Path(out) / INBOX / f"{name}.json"
    atomic_write(path, json.dumps(records).encode())
    return path


def posted_rows(out: Path) -> pd.DataFrame:
    """Every valid row posted to ``out``'s inbox and not collected yet (read only)."""
    rows = []
    for path in sorted((Path(out) / INBOX).glob("*.json")):
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
            rows += [parse_row(r) for r in records]
        except (ValueError, OSError):
            continue  # collect() reports it
    return frame(rows)


TIMEOUT = 120.0  # seconds a connection waits for another one's lock


def _retry_locked(statement: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    """Run ``statement``, again while another connection holds the lock, for up to ``timeout`` seconds.

    SQLite's busy handler does not cover every case: switching a new file to WAL while another process opens it
    too fails at once with "database is locked" (seen in 1 of 4 runs of four processes opening one new store),
    so two commands started together on one folder must wait here instead."""
    deadline, delay = time.monotonic() + timeout, 0.005
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as e:
            if ("locked" not in str(e) and "busy" not in str(e)) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(2 * delay, 0.25)


class ResultsStore:
    """The rows of one run folder. ``add`` upserts, ``frame`` reads back (validated), ``export`` writes the CSV."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.db, self.csv = self.out / "results.sqlite", self.out / "results.csv"
        if not self.db.exists() and self.csv.is_file():
            from robrep.harness.migrate import import_csv

            import_csv(self.out)  # a folder from before the store: the store whole, or nothing and the folder as it was
        self.conn = sqlite3.connect(self.db, timeout=TIMEOUT, isolation_level=None)
        try:
            _retry_locked(lambda: self.conn.execute("PRAGMA journal_mode=WAL"))
            _retry_locked(lambda: self.conn.execute(
                "CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, data TEXT NOT NULL)"))
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e)):
                raise
            self.conn.close()
            raise ResultsError(f"{self.db} is damaged ({e}); results.csv.orig or results.csv may hold its rows: "
                               "move the damaged store away and run again to import them") from None

    def add(self, rows: pd.DataFrame) -> None:
        """Validate and upsert ``rows`` in one transaction (a row with the same key is replaced)."""
        pairs = keyed_records(rows)
        if not pairs:
            return
        with self.transaction():
            self.conn.executemany("INSERT INTO rows (key, data) VALUES (?, ?) "
                                  "ON CONFLICT(key) DO UPDATE SET data = excluded.data", pairs)

    @contextlib.contextmanager
    def transaction(self):
        """One write transaction: no other writer of the store runs between its reads and writes (a second one
        waits for it), so a read-modify-write (``amend``) cannot lose what another command wrote meanwhile."""
        if self.conn.in_transaction:  # already inside one (``add`` within ``transaction``)
            yield
            return
        _retry_locked(lambda: self.conn.execute("BEGIN IMMEDIATE"))
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    def collect(self) -> int:
        """Move every posted cell (``post``) into the store; returns how many rows came in. A file that cannot
        be read is moved to ``inbox/rejected/`` with a warning, never deleted."""
        inbox = self.out / INBOX
        n = 0
        for path in sorted(inbox.glob("*.json")) if inbox.is_dir() else []:
            try:
                rows = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
                self.add(rows)
            except FileNotFoundError:  # another writer on this folder (a second command) collected it
                continue
            except (ValueError, OSError) as e:
                rejected = inbox / "rejected" / path.name
                rejected.parent.mkdir(exist_ok=True)
                try:
                    path.replace(rejected)
                except FileNotFoundError:
                    continue
                log.warning("posted cell %s cannot be stored (%s); kept as %s", path.name, e, rejected)
                continue
            path.unlink(missing_ok=True)
            n += len(rows)
        return n

    def frame(self) -> pd.DataFrame:
        """Every valid row in the store, normalized; ``attrs["invalid"]`` lists rows that failed validation."""
        rows, invalid = [], []
        for key, data in self.conn.execute("SELECT key, data FROM rows"):
            try:
                rows.append(parse_row(json.loads(data)))
            except ValueError as e:
                invalid.append((str(self.db), key, str(e)))
                log.warning("%s: row %s %s; it is kept out of tables, resumes and publishing", self.db, key, e)
        df = frame(rows)
        df.attrs["invalid"] = invalid
        return df

    def export(self) -> pd.DataFrame:
        """Write results.csv from the store (atomically), under the write lock, so that the CSVs of several writers
        (a bench, verify, certify) are written in the order of their commits and the last one holds them all;
        returns what was written."""
        with self.transaction():
            df = self.frame()
            write_results(self.csv, df)
        return df

    def close(self) -> None:
        self.conn.close()


def amend(folder: Path, csv: Path, updates: list[tuple[tuple, float, dict[str, Any]]]) -> bool:
    """Write columns into rows a command added to a finished run (``robrep verify``'s verdicts, ``robrep
    certify``'s bounds): per row its key (``row_key``), the adversarial accuracy it was read with, and the columns.
    Only where ``csv`` is the store's own export and every row is stored with that accuracy: a CSV that differs
    from its store (edited by hand?) is left as it is (a warning says so). Returns whether it wrote."""
    from robrep.rows.layout import row_key

    folder = Path(folder)
    if not (folder / "results.sqlite").is_file() or Path(csv) != folder / "results.csv":
        return False
    store = ResultsStore(folder)
    try:
        # read and write in one transaction: another command amending the same rows (verify and certify at once)
        # waits, then reads what this one wrote, so neither's columns are lost
        with store.transaction():
            stored = {row_key(r): r for r in store.frame().to_dict("records")}
            if not all(k in stored and abs(stored[k]["adversarial_accuracy"] - acc) < 1e-9 for k, acc, _ in updates):
                log.warning("%s differs from %s (edited by hand?): nothing is recorded in it", csv,
                            folder / "results.sqlite")
                return False
            store.add(pd.DataFrame([{**stored[k], **columns} for k, _, columns in updates]))
        store.export()
        return True
    finally:
        store.close()
