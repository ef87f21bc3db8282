"""Rows on disk: results CSVs read (every row validated, the bad ones reported with file and line),
normalized (what older files leave out filled in), merged by key and written atomically; and rows as JSON
records, the format of the store and the inbox."""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from robrep.io import atomic_write
from robrep.rows.layout import COLUMNS, KEY, SCHEMA, ResultsError, normalize, parse_row, row_key

log = logging.getLogger(__name__)


def merge(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``old`` and ``new``; where both have a key, the new row wins."""
    if old is None or old.empty:
        df = new
    else:
        df = pd.concat([old, new], ignore_index=True)
    df = normalize(df.assign(**{c: None for c in COLUMNS if c not in df.columns}))  # every row has every column
    df = df.drop_duplicates(subset=list(KEY), keep="last")
    cols = list(COLUMNS) + [c for c in df.columns if c not in COLUMNS]
    return df[cols].sort_values(["dataset", "task", "suite", "attack", "learner", "run", "radius"],
                                kind="stable").reset_index(drop=True)


def frame(rows: list[dict[str, Any]], columns: list[str] | None = None) -> pd.DataFrame:
    """Parsed rows as a normalized DataFrame (every column of the layout, sorted, one row per key)."""
    return merge(None, pd.DataFrame(rows, columns=columns or None))


def read_results(path: str | Path) -> pd.DataFrame | None:
    """The valid rows of a results CSV (None if there is no file). Rows that fail ``parse_row`` (cut short,
    junk, missing provenance) are logged with file and line, left out, and listed in ``df.attrs["invalid"]``
    as (file, line, reason); the file itself is not changed."""
    path = Path(path)
    if not path.is_file():
        return None
    rows, invalid, lines = [], [], {}
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or not {"run", "radius", "adversarial_accuracy"} <= set(header):
                raise ResultsError(f"{path} is not a robrep results file: its header is {header!r}")
            missing = [c for c, (_, required) in SCHEMA.items() if required and c not in header]
            if missing:
                raise ResultsError(f"{path} lacks the column(s) {', '.join(missing)}, which every row needs")
            line = reader.line_num
            for fields in reader:
                if not any(f.strip() for f in fields):
                    line = reader.line_num
                    continue
                try:
                    if len(fields) != len(header):
                        raise ValueError(f"has {len(fields)} fields, the header {len(header)}")
                    rows.append(parse_row(dict(zip(header, fields))))
                    try:
                        lines[row_key(rows[-1])] = line + 1
                    except KeyError:  # a key column older files lack (filled in by normalize): line unknown
                        pass
                except ValueError as e:
                    invalid.append((str(path), line + 1, str(e)))
                line = reader.line_num
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ResultsError(f"cannot read results file {path}: {e}") from e
    for file, line, reason in invalid:
        log.warning("%s:%d: row %s; it is kept out of tables, resumes and publishing", file, line, reason)
    df = frame(rows, header)
    df.attrs["invalid"] = invalid
    df.attrs["lines"] = lines  # row key -> its line in the file
    return df


def write_results(path: str | Path, df: pd.DataFrame) -> None:
    """``df`` as CSV, atomically: numbers to 10 significant digits, except the radius, which is part of the key
    and is written exactly (Python's shortest round-trip form: 0.1 as 0.1, 8/255 as 0.03137254901960784), so a
    row read back has the key it was written with."""
    buf = io.StringIO()
    if "radius" in df:
        df = df.assign(radius=[repr(float(v)).removesuffix(".0") if v == v else "" for v in df["radius"]])
    df.to_csv(buf, index=False, float_format="%.10g")
    atomic_write(Path(path), buf.getvalue().encode())


def _plain(value: Any) -> Any:
    """A JSON-ready scalar: numpy and pandas scalars as Python ones, NaN as None."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def plain_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows as JSON-ready dicts (numpy scalars as Python ones, NaN as None)."""
    return [{k: _plain(v) for k, v in raw.items()} for raw in rows.to_dict("records")]


def keyed_records(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(key, JSON) per row, each validated first: a row that cannot be read back is refused (ValueError)."""
    return [(row_key(parse_row(plain)), json.dumps(plain)) for plain in plain_records(rows)]
