"""The result-row layout, in one place: key, columns, checks, validation, row builders, mask files, worst cases,
and the results CSV. Numbers as numbers, one row per (run, dataset, task, suite, attack, radius).

The CSV is rewritten atomically after every finished cell, so a killed run loses at
most the cell in flight; rows are merged by key, never by order, so a resumed or
scaled-out run adds no duplicates. Every row read is validated against the layout
(``parse_row``): a row that is cut short, holds junk or lacks its provenance is reported
with its file and line and kept out of tables, resumes and publishing.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from robrep.attacks.base import Attack, radius_grid
from robrep.attacks.cascade import is_chained
from robrep.checkpoint import atomic_write, short_hash
from robrep.checks import LATE_MAX

log = logging.getLogger(__name__)

# A row is identified by these columns (what was attacked, how, and on which points).
KEY = ("encoder_sha256", "dataset", "task", "suite", "attack", "attack_config", "radius", "n_examples", "seed",
       "label_fraction")

# The checks every attack row records (robrep.checks computes them; True, False, or empty where one does not apply).
CHECK_COLUMNS = ("check_noise_floor", "check_converged", "check_explored", "check_guards", "check_consistent")
# The numbers they judge.
EVIDENCE_COLUMNS = ("noise_accuracy", "late_share", "last_restart_share", "explored_share")

# When and where: the columns that differ between any two runs of the same cells (whatever else differs is a bug).
PER_RUN = ("timestamp", "wall_seconds", "train_seconds", "checkpoint")

# What was run, without the encoder's hash: matches a re-trained encoder's rows to the published ones.
MATCH_RUN = ("run", *(k for k in KEY if k != "encoder_sha256"))

COLUMNS = (
    "learner", "label", "run", "checkpoint", "source", "learner_config", "arch", "dataset", "task", "n_classes",
    "suite", "attack", "attack_config", "norm", "steps", "restarts", "step_size", "radius", "n_examples",
    "label_fraction", "n_probe_labels",
    "protocol", "nominal_accuracy", "adversarial_accuracy", "recomputed_accuracy", "n_attacked", "n_broken_first",
    "max_perturbation",
    *EVIDENCE_COLUMNS, *CHECK_COLUMNS, "n_rejected", "checks_passed", "check_thresholds", "warnings", "verified",
    "seed", "encoder_sha256", "probe_sha256", "probe_train_accuracy", "robrep_version", "torch_version",
    "device", "machine", "threads", "train_seconds", "wall_seconds", "timestamp",
)


class ResultsError(ValueError):
    """A results file cannot be read at all (not a results CSV); the message names the file."""


def _text(v: str) -> str:
    return v


def _int(v: str) -> int:
    f = float(v)
    if not f.is_integer():
        raise ValueError(f"{v!r} is not an integer")
    return int(f)


def _float(v: str) -> float:
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"{v!r} is not a finite number")
    return f


def _unit(v: str) -> float:
    f = _float(v)
    if not 0 <= f <= 1:
        raise ValueError(f"{v!r} is not in [0, 1]")
    return f


def _bool(v: str) -> bool:
    if v in ("True", "true", "1"):
        return True
    if v in ("False", "false", "0"):
        return False
    raise ValueError(f"{v!r} is not True or False")


def _sha256(v: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", v):
        raise ValueError(f"{v!r} is not a SHA-256 (64 hex digits)")
    return v


def _timestamp(v: str) -> str:
    if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[+-]\d{4}|Z)?", v):
        raise ValueError(f"{v!r} is not a timestamp (YYYY-MM-DDTHH:MM:SS+zzzz)")
    return v


# column -> (parser of its text, required). Optional columns may be empty (or missing, in older files).
SCHEMA: dict[str, tuple[Callable[[str], Any], bool]] = {
    **{c: (_text, True) for c in ("learner", "run", "learner_config", "dataset", "task", "suite", "attack",
                                  "attack_config", "norm", "robrep_version", "torch_version", "device")},
    **{c: (_text, False) for c in ("label", "checkpoint", "source", "arch", "step_size", "warnings",
                                   "check_thresholds", "verified", "machine", "protocol")},
    **{c: (_int, True) for c in ("n_classes", "n_examples", "seed")},
    **{c: (_int, False) for c in ("steps", "restarts", "n_probe_labels", "n_attacked", "n_broken_first",
                                  "n_rejected", "threads")},
    **{c: (_unit, True) for c in ("nominal_accuracy", "adversarial_accuracy")},
    **{c: (_unit, False) for c in ("recomputed_accuracy", "probe_train_accuracy", "label_fraction",
                                   *EVIDENCE_COLUMNS)},
    "radius": (_float, True), "max_perturbation": (_float, False), "wall_seconds": (_float, False),
    "train_seconds": (_float, False),
    "checks_passed": (_bool, True),
    **{c: (_bool, False) for c in CHECK_COLUMNS},
    "encoder_sha256": (_sha256, True), "probe_sha256": (_sha256, True), "timestamp": (_timestamp, True),
}


def _as_text(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v)


def parse_row(raw: dict[str, Any]) -> dict[str, Any]:
    """A row checked against the layout: typed values, or ValueError saying what is wrong with it."""
    row: dict[str, Any] = {}
    for column, value in raw.items():
        text = _as_text(value)
        parser, required = SCHEMA.get(column, (_text, False))
        if text == "":
            if required:
                raise ValueError(f"{column} is empty")
            row[column] = None
            continue
        try:
            row[column] = parser(text)
        except ValueError as e:
            raise ValueError(f"{column}: {e}") from None
    missing = [c for c, (_, required) in SCHEMA.items() if required and c not in raw]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    if row["radius"] < 0:
        raise ValueError(f"radius {row['radius']} is negative")
    return row


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


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` in which what older results, or learners without the field, leave empty or out is
    filled in: label fraction, warnings, architecture and label. ``merge`` and ``read_results`` return
    normalized rows."""
    df = df.copy()
    # rows from before the option: all labels
    df["label_fraction"] = df.get("label_fraction", pd.Series(1.0, index=df.index)).fillna(1.0).astype(float)
    # rows from before the cascade: every attack attacked every point
    df["protocol"] = df.get("protocol", pd.Series("per-attack", index=df.index)).fillna("per-attack") \
        .replace("", "per-attack").astype(str)
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


# --- row builders: every field a row has is set here ---------------------------------------------------------

def row_key(row: dict[str, Any]) -> str:
    """The row's key (``KEY``) as text that compares equal across CSV and JSON round trips."""
    return json.dumps([str(row[k]) if k != "radius" else float(row[k]) for k in KEY])


# The fields ``encoder_row`` sets: what every row of one encoder, task and probe shares.
ENCODER_FIELDS = (
    "learner", "label", "run", "checkpoint", "source", "learner_config", "arch", "dataset", "task", "n_classes",
    "n_examples", "label_fraction", "n_probe_labels", "seed", "encoder_sha256", "probe_sha256",
    "probe_train_accuracy", "robrep_version", "torch_version", "device", "machine", "threads", "train_seconds",
)


def encoder_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The ``ENCODER_FIELDS`` of a stored row (e.g. a cell's, to build the worst case of its task)."""
    return {k: row[k] for k in ENCODER_FIELDS}


def encoder_row(*, learner: str, label: str, run: str, checkpoint: str, source: str, learner_config: dict,
                arch: str, dataset: str, task: str, n_classes: int, n_examples: int, label_fraction: float,
                n_probe_labels: int, seed: int, encoder_sha256: str, probe_sha256: str,
                probe_train_accuracy: float, device: str, train_seconds: float | None = None) -> dict[str, Any]:
    """The fields every row of one encoder, task and probe shares (what was attacked, and its provenance, down
    to the machine and the number of threads that computed it; ``train_seconds``: how long the encoder's
    training took, as its checkpoint records, on whatever machine trained it; empty for encoders robrep did
    not train)."""
    import robrep
    from robrep.provenance import machine

    return {
        "learner": learner, "label": label, "run": run, "checkpoint": checkpoint, "source": source,
        "learner_config": json.dumps(learner_config, sort_keys=True), "arch": arch, "dataset": dataset,
        "task": task, "n_classes": n_classes, "n_examples": n_examples, "label_fraction": label_fraction,
        "n_probe_labels": n_probe_labels, "seed": seed, "encoder_sha256": encoder_sha256,
        "probe_sha256": probe_sha256, "probe_train_accuracy": probe_train_accuracy,
        "robrep_version": robrep.__version__, "torch_version": torch.__version__, "device": device,
        "machine": machine(device), "threads": torch.get_num_threads(), "train_seconds": train_seconds,
    }


def attack_cell(base: dict, attack: Attack, after: dict | None = None) -> dict:
    """The fields of a cell's rows that say which attack ran, with what budget, on top of ``base``. ``after``:
    in a cascade, the attacks before it (``task_cells``), part of its config: it attacks only their survivors."""
    config = attack.settings() if after is None else {**attack.settings(), "cascade_after": after}
    return {**base, "suite": attack.suite, "attack": attack.name, "attack_config": json.dumps(config, sort_keys=True),
            "norm": attack.norm, "protocol": "per-attack" if after is None else "cascade", **attack.budget()}


def task_cells(base: dict, attacks: list[Attack], cascade: bool) -> list[dict]:
    """The cells of a task's attacks: each on every point (``cascade`` False, or a single attack), or as the
    stages of a cascade, each naming the attacks before it and a hash of their configs."""
    if not is_chained(cascade, attacks):
        return [attack_cell(base, a) for a in attacks]
    configs = [json.dumps(a.settings(), sort_keys=True) for a in attacks]
    return [attack_cell(base, a, {"attacks": [b.qualname for b in attacks[:k]],
                                  "sha": short_hash(configs[:k])})
            for k, a in enumerate(attacks)]


def is_finished(done: dict, cell: dict, out: Path, radii) -> bool:
    """Every radius of the cell has a row (``done`` from ``done_cells``) and its mask file is there."""
    key = cell_key({**cell, "radius": None})
    return set(radius_grid(radii)) <= done.get(key, set()) and masks_path(out, cell, radii).is_file()


def masks_path(out: Path, row: dict, radii) -> Path:
    """Where a cell's per-example robust masks live (the worst case is computed from them): named by what the
    cell is (its key and radius grid), not by anything computed, so a resume finds them."""
    tag = short_hash([cell_key({**row, "radius": None}), radius_grid(radii)])
    folder = out / "examples" / row["run"] / f"{row['dataset']}-{row['task']}"
    return folder / f"{row['suite']}--{row['attack']}--{tag}.safetensors"


def save_masks(path: Path, radii, masks: dict[str, torch.Tensor], idx: torch.Tensor) -> None:
    """A cell's (n_radii, N) per-example masks (``robust``, ``late``), with its radii and the test indices
    they are for."""
    atomic_write(path, st_save({"radii": torch.tensor(radius_grid(radii), dtype=torch.float64),
                                **{k: m.to(torch.uint8).contiguous() for k, m in masks.items()},
                                "indices": idx.contiguous()}))


def load_masks(path: Path) -> dict[str, torch.Tensor]:
    """The (n_radii, N) bool masks ``save_masks`` wrote (``late`` is missing in files from before 2026-12-02)."""
    stored = load_file(path)
    return {k: stored[k].bool() for k in ("robust", "late") if k in stored}


def result_rows(res, checks: dict[float, dict[str, Any]]) -> list[dict[str, Any]]:
    """One partial row per radius of an ``AttackResult`` and its checks (no provenance: ``cell_rows`` adds it)."""
    nominal = res.clean_correct.float().mean().item()
    return [{"radius": r, "nominal_accuracy": nominal, "adversarial_accuracy": res.accuracy(r),
             "n_attacked": res.attacked[r], **checks[r], "checks_passed": passed(checks[r]),
             "warnings": "; ".join(check_warnings(checks[r])), "wall_seconds": res.wall_seconds} for r in res.radii]


def check_warnings(checks: dict[str, Any]) -> list[str]:
    """What a row's failed checks mean, in words."""
    out = []
    if is_false(checks.get("check_noise_floor")):
        out.append(f"weaker than random noise in the ball (noise accuracy {checks['noise_accuracy']:.3f}): "
                   "the attack is broken")
    if is_false(checks.get("check_converged")) and checks.get("suite") == "worst-case":
        out.append(f"not converged: {checks['late_share']:.3f} of test points were broken only late (last fifth of "
                   "the model calls or last restart) by every attack that broke them; more steps or restarts would "
                   "change the answer")
    elif is_false(checks.get("check_converged")):
        out.append(f"not converged: {checks['late_share']:.3f} of test points first broken in the last fifth "
                   f"of the attack, {checks.get('last_restart_share') or 0:.3f} in its last restart; more steps or "
                   "restarts would change the answer")
    if is_false(checks.get("check_explored")):
        out.append(f"only {checks['explored_share']:.3f} of robust points were explored to half the radius: "
                   "the attack barely moved")
    if is_false(checks.get("check_guards")):
        out.append(f"{checks['n_rejected']} returned inputs rejected by the guards")
    if is_false(checks.get("check_consistent")):
        out.append("re-computed decisions differ from the reported ones: the model is not deterministic")
    return out


def passed(row: dict) -> bool:
    """A row's checks passed: none of ``CHECK_COLUMNS`` is False (None: the check does not apply)."""
    return not any(is_false(row.get(c)) for c in CHECK_COLUMNS)


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def is_false(v: Any) -> bool:
    return not is_missing(v) and not bool(v)


def cell_rows(cell: dict[str, Any], partial: list[dict[str, Any]], timestamp: str) -> pd.DataFrame:
    """A finished cell's rows: its fields, each radius's results, when."""
    return pd.DataFrame([{**cell, **r, "timestamp": timestamp} for r in partial])


def consistency_warnings(accuracy: list[tuple[Attack, float]]) -> list[str]:
    """design/evaluation.md: iterative attacks should beat single-step ones, and a black-box attack
    should not beat the white-box ones by much (a sign of gradient masking)."""
    warnings = []
    single = [(acc, a) for a, acc in accuracy if a.kind == "single-step"]
    for acc, a in ((acc, a) for a, acc in accuracy if a.kind == "iterative"):
        for s_acc, s in single:
            if acc > s_acc + 0.01:
                warnings.append(f"iterative {a.qualname} ({acc:.3f}) weaker than single-step {s.qualname} ({s_acc:.3f})")
    # white-box: the gradient attacks alone (AutoAttack holds Square, so it cannot tell on it)
    white = [acc for a, acc in accuracy if a.kind != "black-box" and not a.includes_black_box]
    for acc, a in ((acc, a) for a, acc in accuracy if a.kind == "black-box"):
        if white and acc < min(white) - 0.02:
            warnings.append(f"black-box {a.qualname} ({acc:.3f}) beats every gradient attack "
                            f"(best {min(white):.3f}): possible gradient masking")
    return warnings


MASKING_SHARE = 0.02  # a black-box attack breaking more than this share of the test points flags gradient masking


def cascade_warnings(at_r: list[tuple[Attack, Any]]) -> list[str]:
    """The cascade's sign of gradient masking: a black-box attack, which runs after every gradient attack,
    broke a noticeable share of the test points (points every gradient attack failed on)."""
    warnings = []
    for a, v in at_r:
        first = v.get("n_broken_first")
        if a.kind == "black-box" and not is_missing(first) and int(first) > MASKING_SHARE * int(v["n_examples"]):
            warnings.append(f"black-box {a.qualname} broke {int(first)} of {int(v['n_examples'])} test points "
                            "that every gradient attack before it failed on: possible gradient masking")
    return warnings


def worst_case_rows(base: dict, cells: list[tuple[Attack, pd.DataFrame, dict[str, torch.Tensor]]], radii) -> list[dict]:
    """Per radius, a point is robust only if every attack that ran failed on it.

    ``cells`` holds, per attack, its result rows and its per-example masks (``robust``, and ``late`` where
    recorded), each (n_radii, N) bool.

    Convergence of the worst case is judged per point: a point counts as late if every attack that broke it
    broke it late (a point one attack found late and another early does not move the worst case). Where a
    cell has no ``late`` masks (runs from before they were recorded), every attack must have converged."""
    radii = radius_grid(radii)
    robust = torch.stack([m["robust"] for _, _, m in cells]).all(dim=0)  # (n_radii, N)
    per_point = all("late" in m for _, _, m in cells)
    if per_point:  # broken by some attack, and late by every attack that broke it
        early = torch.stack([~m["robust"] & ~m["late"] for _, _, m in cells]).any(dim=0)
        only_late = ~robust & ~early
    rows = []
    protocol = str(cells[0][1].iloc[0].get("protocol") or "per-attack")
    attacks = sorted(f"{a.qualname}: {json.dumps(a.settings(), sort_keys=True)}" for a, _, _ in cells)
    for i, r in enumerate(radii):
        at_r = [(a, df[df["radius"] == r].iloc[0]) for a, df, _ in cells]
        first = at_r[0][1]
        warn = cascade_warnings(at_r) if protocol == "cascade" else \
            consistency_warnings([(a, float(v["adversarial_accuracy"])) for a, v in at_r])
        row = {
            **base, "suite": "worst-case", "attack": "worst-case",
            "attack_config": json.dumps(attacks + (["cascade"] if protocol == "cascade" else [])),
            "norm": first["norm"], "steps": None, "restarts": None, "step_size": None, "radius": r,
            "protocol": protocol,
            "nominal_accuracy": first["nominal_accuracy"], "adversarial_accuracy": robust[i].float().mean().item(),
            "n_attacked": None, "wall_seconds": float(sum(v["wall_seconds"] for _, v in at_r)),
            "warnings": "; ".join(warn + [f"{a.qualname}: {v['warnings']}" for a, v in at_r
                                          if isinstance(v.get("warnings"), str) and v["warnings"]]),
        }
        # the worst case's evidence is its attacks' together: each check holds if it holds for every attack,
        # except exploration: the worst case's robust points were explored if some attack explored its own
        # robust points (a superset), and there is nothing to explore when none is left
        for col in CHECK_COLUMNS:
            applies = [bool(v[col]) for _, v in at_r if not is_missing(v.get(col))]
            row[col] = (any if col == "check_explored" else all)(applies) if applies else None
        if row["adversarial_accuracy"] == 0:
            row["check_explored"] = None
        for col, pick in (("late_share", max), ("last_restart_share", max), ("explored_share", min)):
            known = [float(v[col]) for _, v in at_r if not is_missing(v.get(col))]
            row[col] = pick(known) if known else None
        if per_point and any(not is_missing(v.get("late_share")) for _, v in at_r):
            row["late_share"] = only_late[i].float().mean().item()
            row["last_restart_share"] = None  # part of late_share here
            row["check_converged"] = row["late_share"] <= LATE_MAX
        noise = [float(v["noise_accuracy"]) for _, v in at_r if not is_missing(v.get("noise_accuracy"))]
        row["noise_accuracy"] = min(noise) if noise else None
        if noise:
            row["check_noise_floor"] = row["adversarial_accuracy"] <= row["noise_accuracy"]
        row["n_rejected"] = int(sum(int(v["n_rejected"]) for _, v in at_r))
        row["check_thresholds"] = first.get("check_thresholds")
        # its own checks decide: an attack's failure shows in the worst case's check only where it can move it
        row["checks_passed"] = passed(row)
        own = check_warnings({k: row[k] for k in ("suite", "check_noise_floor", "check_converged", "late_share",
                                                  "last_restart_share", "noise_accuracy")})
        row["warnings"] = "; ".join(w for w in [*own, row["warnings"]] if w)
        rows.append(row)
    return rows


def stored_as(df: pd.DataFrame, rows: list[dict]) -> pd.DataFrame | None:
    """The stored rows with the keys of ``rows``, if every one is there with the same accuracies and warnings."""
    want = {row_key(r): r for r in rows}
    stored = df[[row_key(r) in want for r in df.to_dict("records")]] if not df.empty else df
    if len(stored) != len(want):
        return None
    for r in stored.to_dict("records"):
        new = want[row_key(r)]
        if (r["adversarial_accuracy"], r["nominal_accuracy"], r["warnings"] or "") != \
                (new["adversarial_accuracy"], new["nominal_accuracy"], new["warnings"] or ""):
            return None
    return stored


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Adversarial accuracy with runs as rows and radii as columns, per (dataset, task, suite, attack); a run
    measured under several protocols (test points, seed, label fraction, attack config) has a row for each,
    never one value picked among them."""
    df = normalize(df)
    for col, default in (("n_examples", 0), ("seed", 0), ("attack_config", "")):
        if col not in df:
            df[col] = default
    index = ["dataset", "task", "suite", "attack", "label", "run", "n_examples", "label_fraction", "seed",
             "attack_config"]
    table = df.pivot_table(index=index, columns="radius", values="adversarial_accuracy", aggfunc="first")
    if df.groupby(index, dropna=False).size().max() > df["radius"].nunique():  # cannot happen: the key is unique
        raise ValueError("several rows per protocol and radius: the results hold duplicate keys")
    return table


MANY_TASKS = 4  # a data set with at least this many tasks is shown as the paper's Table 1: one row per task


def many_task_datasets(df: pd.DataFrame) -> list[str]:
    """The data sets of ``df`` shown as a task table (``task_table``) rather than one table per task."""
    return sorted(d for d, n in df.groupby("dataset")["task"].nunique().items() if n >= MANY_TASKS)


def headline_radius(radii) -> float:
    """The radius a task table reports: 0.1 (the paper's) when it was attacked, else the smallest attacked one."""
    attacked = sorted(float(r) for r in set(radii) if r > 0)
    return 0.1 if 0.1 in attacked else attacked[0] if attacked else 0.0


def task_table(df: pd.DataFrame, radius: float | None = None) -> pd.DataFrame:
    """The paper's Table 1 for one data set's rows: one row per task and, per learner, its nominal accuracy and
    its adversarial accuracy at ``radius`` (default ``headline_radius``): the worst case over all the run's
    attacks where the run has one, else its strongest single attack's, and then the learner's name in
    ``attrs["single_attack"]`` (an upper bound: more attacks can only lower it). A learner label with several
    runs gets one pair of columns per run, named ``label (run)``. Columns: (learner, "nominal" | "adversarial")."""
    if df.empty:
        raise ValueError("no result rows for a task table")
    radius = headline_radius(df["radius"]) if radius is None else float(radius)
    several = df.groupby("label")["run"].nunique()
    name = {(lab, run): lab if several[lab] == 1 else f"{lab} ({run})"
            for lab, run in df[["label", "run"]].drop_duplicates().itertuples(index=False)}
    cells, single = {}, set()
    for (lab, run, task), g in df.groupby(["label", "run", "task"], sort=True):
        who = name[(lab, run)]
        at = g[(g["radius"] - radius).abs() < 1e-9]
        worst = at[at["suite"] == "worst-case"]
        if len(worst):
            adv = float(worst["adversarial_accuracy"].min())
        elif len(at):
            adv = float(at["adversarial_accuracy"].min())
            single.add(who)
        else:
            adv = float("nan")
        cells[(task, who, "nominal")] = float(g["nominal_accuracy"].iloc[0])
        cells[(task, who, "adversarial")] = adv
    table = pd.Series(cells).unstack([1, 2])
    table = table.reindex(columns=pd.MultiIndex.from_product([sorted(set(name.values())), ["nominal", "adversarial"]]))
    table.attrs.update(radius=radius, single_attack=sorted(single))
    return table
