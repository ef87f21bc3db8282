"""A way onto a board for encoders from outside the project.

1. ``robrep bench --protocol mnist5k-linf --learner <your encoder> --out run`` runs the board's protocol;
2. ``robrep leaderboard --submit run --out submission`` writes a self-contained folder: the rows
   (``results.csv``, verify verdicts included), the resolved config (``config.toml``), the saved probes, the
   encoders' checkpoints where robrep can reload them (``checkpoints/``), and ``entry.toml`` to fill in
   (name, family, variant, paper, code, submitter, date);
3. the board's maintainers run ``robrep leaderboard --admit submission``: it checks the entry, attacks every
   claim again with ``robrep verify`` (the independent attacks, on the submission's own checkpoints and
   probes), and publishes the rows, on the standard board if every field of its protocol matches, every
   check passed and every verdict held, else under ``experiments/`` with the reasons. Anything that does not
   hold is refused and nothing is written.

An encoder robrep cannot reload (a module given by name, without a checkpoint) cannot be verified, so its
rows can only be admitted as an experiment.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from robrep.board.entries import FIELDS, template
from robrep.rows.files import read_results, write_results

CHECKPOINTS = "checkpoints"


class SubmissionError(ValueError):
    """A run folder cannot be submitted, or a submission cannot be admitted; the message says why."""


def make_submission(run: str | Path, dest: str | Path) -> Path:
    """Write the submission folder ``dest`` from bench output folder ``run``; returns its ``entry.toml``."""
    run, dest = Path(run), Path(dest)
    rows = read_results(run / "results.csv") if (run / "results.csv").is_file() else None
    if rows is None or rows.empty:
        raise SubmissionError(f"{run} holds no results to submit (run `robrep bench --protocol NAME --out {run}`)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SubmissionError(f"{dest} exists and is not empty: a submission is written to a new folder")
    rows = rows.copy()
    for name, group in rows.groupby("run"):
        source = group["checkpoint"].dropna().astype(str)
        source = source[source != ""]
        if len(source) and Path(source.iloc[0]).is_dir():
            shutil.copytree(source.iloc[0], dest / CHECKPOINTS / name, dirs_exist_ok=True)
            rows.loc[group.index, "checkpoint"] = f"{CHECKPOINTS}/{name}"
    if (run / "probes").is_dir():
        shutil.copytree(run / "probes", dest / "probes", dirs_exist_ok=True)
    if (run / "config.toml").is_file():
        shutil.copy(run / "config.toml", dest / "config.toml")
    write_results(dest / "results.csv", rows)
    label = rows["label"].iloc[0]
    entry = dest / "entry.toml"
    if not entry.is_file():  # a submitter's filled-in entry is never overwritten
        entry.write_text(template(list(rows["encoder_sha256"].unique()), {"name": label, "code": ""}),
                         encoding="utf-8")
    return entry


def with_verdicts(rows: pd.DataFrame, verdicts) -> pd.DataFrame:
    """The submission's rows with the verdicts of the admitting ``robrep verify`` (its own, not the submitter's);
    every claim must have held."""
    from robrep.rows.layout import row_key

    failed = [v for v in verdicts if v.holds is not True]
    if failed:
        raise SubmissionError(f"{len(failed)} claim(s) did not hold or could not be verified; the first: "
                              f"{failed[0].note}. Nothing was admitted")
    notes = {v.key: v.note for v in verdicts}
    rows = rows.copy()
    rows["verified"] = [notes.get(row_key(r), "") for r in rows.to_dict("records")]
    return rows


__all__ = ["CHECKPOINTS", "FIELDS", "SubmissionError", "make_submission", "with_verdicts"]
