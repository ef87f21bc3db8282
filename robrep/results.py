"""Result rows and the results CSV: numbers as numbers, one row per (run, dataset, task, suite, attack, radius).

The CSV is rewritten atomically after every finished cell, so a killed run loses at
most the cell in flight; rows are merged by key, never by order, so a resumed or
scaled-out run adds no duplicates.
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from robrep.checkpoint import atomic_write

# A row is identified by these columns (what was attacked, how, and on which points).
KEY = ("encoder_sha256", "dataset", "task", "suite", "attack", "attack_config", "radius", "n_examples", "seed",
       "label_fraction")

COLUMNS = (
    "learner", "label", "run", "checkpoint", "source", "learner_config", "arch", "dataset", "task", "n_classes",
    "suite", "attack", "attack_config", "norm", "steps", "restarts", "step_size", "radius", "n_examples",
    "label_fraction", "n_probe_labels",
    "nominal_accuracy", "adversarial_accuracy", "recomputed_accuracy", "n_attacked", "max_perturbation",
    "check_radius0", "check_monotone", "check_in_ball", "check_bounds", "check_recomputed", "check_valid_outputs",
    "n_rejected", "checks_passed", "warnings",
    "seed", "encoder_sha256", "probe_sha256", "probe_train_accuracy", "robrep_version", "torch_version",
    "device", "wall_seconds", "timestamp",
)


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


def read_results(path: str | Path) -> pd.DataFrame | None:
    path = Path(path)
    if not path.is_file():
        return None
    return normalize(pd.read_csv(path))


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` in which what older results, or learners without the field, leave empty or out is
    filled in: label fraction, warnings, architecture and label. ``merge`` and ``read_results`` return
    normalized rows."""
    df = df.copy()
    # rows from before the option: all labels
    df["label_fraction"] = df.get("label_fraction", pd.Series(1.0, index=df.index)).fillna(1.0).astype(float)
    # no warnings; a learner without an architecture choice; rows from before provenance was recorded
    for column in ("warnings", "arch", "source"):
        df[column] = df.get(column, pd.Series("", index=df.index)).astype(object).fillna("").astype(str)
    if "learner" in df:  # rows from before labels: the learner's name
        df["label"] = df.get("label", df["learner"]).fillna(df["learner"])
    return df


def write_results(path: str | Path, df: pd.DataFrame) -> None:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.10g")
    atomic_write(Path(path), buf.getvalue().encode())


def done_cells(df: pd.DataFrame | None) -> dict[tuple, set[float]]:
    """For every cell (key without the radius) in ``df``: the radii it has rows for."""
    done: dict[tuple, set[float]] = {}
    if df is None or df.empty:
        return done
    for key, radius in zip(cell_keys(df), df["radius"].astype(float)):
        done.setdefault(key, set()).add(radius)
    return done


def cell_key(row: dict) -> tuple:
    """A cell's identity: the row key without the radius, as text (so CSV round trips compare equal)."""
    return tuple(str(row[k]) for k in KEY if k != "radius")


def cell_keys(df: pd.DataFrame) -> list[tuple]:
    return list(df[[k for k in KEY if k != "radius"]].astype(str).itertuples(index=False, name=None))
