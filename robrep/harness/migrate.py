"""Run folders written by older robreps, brought to the current layout once, off the main path.

- ``import_csv``: a folder from before the results store gets its store from its results.csv, all or nothing,
  with the original kept and every refused row written down with the reason (including a number that
  disagrees with the per-example results its cell saved: edited by hand).
- ``adopt_old_probes``: probes saved before probe records existed get the record their rows imply, so a resume
  attacks with them rather than with a probe fitted again.

(Rows of older files whose optional columns are missing are filled in by ``robrep.rows.normalize``; checkpoints
whose configs lack a later field load with its ``LEGACY`` value, ``robrep.learners``.)
"""
from __future__ import annotations

import csv
import io
import logging
import os
import sqlite3
from pathlib import Path

import pandas as pd

from robrep.io import atomic_write, sha256_bytes
from robrep.probes import record_path, write_probe_record
from robrep.rows.files import keyed_records, read_results
from robrep.rows.layout import cell_keys, radius_grid, row_key
from robrep.rows.masks import load_masks, masks_path

log = logging.getLogger(__name__)


def import_csv(out: Path) -> None:
    """Make ``out``'s store from the results.csv written before it: all or nothing. The store is built under another
    name and linked into place only when complete (a second command doing the same finds it there and keeps
    the first); the original CSV is kept (``results.csv.orig``) and the rows it refused are written to
    ``results-rejected.csv`` first, so no row is ever only in a file that a later export replaces."""
    csv_path, db = out / "results.csv", out / "results.sqlite"
    old = read_results(csv_path)  # an unreadable file or a missing column raises here: nothing written
    invalid = list(old.attrs.get("invalid", []))
    keep, mismatched = _agree_with_masks(out, old, str(csv_path))
    invalid += mismatched
    data = csv_path.read_bytes()
    orig = out / "results.csv.orig"
    if orig.exists() and orig.read_bytes() != data:  # an earlier import's original: keep both
        orig = out / f"results.csv.orig-{sha256_bytes(data)[:8]}"
    if not orig.exists():
        atomic_write(orig, data)
    if invalid:
        lines = data.decode("utf-8", errors="replace").splitlines()
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["file", "line", "reason", "text"])
        for file, line, reason in invalid:
            writer.writerow([file, line, reason, lines[line - 1] if 0 < line <= len(lines) else ""])
        atomic_write(out / "results-rejected.csv", buf.getvalue().encode())
        log.warning("%d row(s) of %s were refused (listed with the reason in %s); they are kept out of the "
                    "store; the original file is %s", len(invalid), csv_path, out / "results-rejected.csv",
                    orig)
    tmp = out / f"results.sqlite.import-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("CREATE TABLE rows (key TEXT PRIMARY KEY, data TEXT NOT NULL)")
            conn.execute("BEGIN")
            conn.executemany("INSERT OR REPLACE INTO rows (key, data) VALUES (?, ?)", keyed_records(keep))
            conn.execute("COMMIT")
        finally:
            conn.close()
        try:
            os.link(tmp, db)  # atomic, and never over a store another command made meanwhile
        except FileExistsError:
            log.info("%s was imported by another command at the same time; its store is used", csv_path)
    finally:
        tmp.unlink(missing_ok=True)


def _agree_with_masks(out: Path, df: pd.DataFrame, file: str) -> tuple[pd.DataFrame, list[tuple[str, int, str]]]:
    """The rows of ``df`` whose accuracies agree with the per-example masks their cell saved (rows without a mask
    file, e.g. worst cases, are kept as they are), and the others as (file, line, reason): a number edited by
    hand in a CSV never becomes a result."""
    if df.empty:
        return df, []
    bad, refused = [], []
    cells: dict[tuple, list[int]] = {}
    for i, key in enumerate(cell_keys(df)):
        cells.setdefault(key, []).append(i)
    for rows in cells.values():
        cell = df.iloc[rows]
        first = cell.iloc[0].to_dict()
        path = masks_path(out, first, cell["radius"].astype(float))
        if not path.is_file():
            continue
        try:
            masks = load_masks(path)["robust"].float().mean(1).tolist()  # (n_radii,) accuracy per radius
        except Exception:  # noqa: BLE001  a damaged mask file: the cell runs again (is_finished needs it)
            continue
        grid = radius_grid(cell["radius"].astype(float))
        for i, row in zip(rows, cell.to_dict("records")):
            r = grid.index(float(row["radius"]))
            published = float(row["adversarial_accuracy"])
            if r < len(masks) and abs(masks[r] - published) > 1e-6:
                bad.append(i)
                line = df.attrs.get("lines", {}).get(row_key(row), 0)
                refused.append((file, line, f"adversarial_accuracy {published:.6g} disagrees with the per-example "
                                            f"results its cell saved ({masks[r]:.6g}; run {row['run']}, task "
                                            f"{row['task']}, {row['suite']}/{row['attack']}, radius "
                                            f"{row['radius']:g}); edited?"))
    return df.drop(index=df.index[bad]).reset_index(drop=True), refused


def adopt_old_probes(out: Path, df: pd.DataFrame) -> int:
    """Probes saved before probe records existed: a probe whose SHA-256 the stored rows record gets the record
    those rows imply, so a resume attacks with it rather than a re-fitted one. Returns how many."""
    folder = out / "probes"
    if df.empty or not folder.is_dir():
        return 0
    n = 0
    for path in folder.glob("*/*.safetensors"):
        if record_path(path).is_file():
            continue
        sha = sha256_bytes(path.read_bytes())
        rows = df[df["probe_sha256"] == sha]
        if rows.empty:
            continue
        row = rows.iloc[0].to_dict()
        write_probe_record(path, {k: str(row[k]) for k in ("encoder_sha256", "dataset", "task")}
                           | {"label_fraction": float(row["label_fraction"]), "seed": int(row["seed"]),
                              "fit": "before probe records",  # so it is never taken for a PROBE_FIT probe
                              "n_probe_labels": int(row["n_probe_labels"]), "probe_sha256": sha,
                              "probe_train_accuracy": float(row["probe_train_accuracy"])})
        n += 1
    return n
