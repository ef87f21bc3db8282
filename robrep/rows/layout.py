"""The row layout: the key, every column and named group of columns, each column's parser, and the flags a
row's checks read as."""
from __future__ import annotations

import json
import logging
import math
import re
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


# A row is identified by these columns (what was attacked, how, and on which points). ``probe`` joined later: a
# row with the standard probe is keyed without it, so every row, store and mask file from before keeps its key.
KEY = ("encoder_sha256", "dataset", "task", "suite", "attack", "attack_config", "radius", "n_examples", "seed",
       "label_fraction", "probe")
STANDARD_PROBE = "standard"  # the probe column of a row whose probe was fitted on clean features (robrep.probes)


def probe_mode(probe: str, norm: str = "linf", eps: float | None = None) -> str:
    """The ``probe`` column's value: ``standard``, or ``adversarial <norm> <eps>`` for a probe trained on
    attacked inputs (``robrep.probes.train_adversarial_probe``)."""
    if probe == STANDARD_PROBE:
        return STANDARD_PROBE
    if probe != "adversarial" or eps is None or not eps > 0:
        raise ValueError(f"probe must be standard or adversarial (with a radius > 0), got {probe!r}, {eps!r}")
    steps = eps * 255  # a radius in 255ths of the pixel range (8/255) is written so; a short decimal as it is
    text = f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-9 and len(f"{eps:g}") > 5 else f"{eps:g}"
    return f"adversarial {norm} {text}"


def _keyed(row, k: str) -> bool:
    return k != "probe" or str(row.get(k) or STANDARD_PROBE) not in (STANDARD_PROBE, "nan", "None")


# The checks every attack row records (robrep.checks computes them; True, False, or empty where one does not apply).
NORMS = ("linf", "l2")  # the threat models a row can carry
CERTIFY_METHODS = ("crown", "alpha-crown", "ibp")  # what certified_by names: robrep.certify.bounds' methods
# how people arrive spelling them (RobustBench's Linf, torchattacks' Linf and L2, numpy's inf and 2)
NORM_SPELLINGS = {"linf": "linf", "l_inf": "linf", "inf": "linf", "l2": "l2", "l_2": "l2", "2": "l2"}


def norm_name(value: Any) -> str:
    """A threat model's canonical name (``linf`` or ``l2``) from any usual spelling; ValueError otherwise."""
    text = str(value).strip().lower().replace("-", "_")
    if text in NORM_SPELLINGS:
        return NORM_SPELLINGS[text]
    raise ValueError(f"norm must be linf or l2 (also spelt Linf, L2, inf, 2), got {value!r}")


CHECK_COLUMNS = ("check_noise_floor", "check_converged", "check_explored", "check_guards", "check_consistent")


# The thresholds the convergence and exploration checks hold those numbers to (robrep.checks computes them,
# admission recomputes the verdicts from a row's own numbers).
LATE_MAX = 0.01  # share of the test points first broken late
EXPLORED_MIN = 0.9  # share of the robust points whose queries reached REACH of the radius
# The numbers they judge.
EVIDENCE_COLUMNS = ("noise_accuracy", "late_share", "last_restart_share", "explored_share")


# When and where: the columns that differ between any two runs of the same cells (whatever else differs is a bug).
PER_RUN = ("timestamp", "wall_seconds", "train_seconds", "checkpoint")


# What was run, without the encoder's hash: matches a re-trained encoder's rows to the published ones.
MATCH_RUN = ("run", *(k for k in KEY if k != "encoder_sha256"))


COLUMNS = (
    "learner", "label", "run", "checkpoint", "source", "learner_config", "arch", "dataset", "task", "n_classes",
    "suite", "attack", "attack_config", "norm", "steps", "restarts", "step_size", "radius", "n_examples",
    "label_fraction", "n_probe_labels", "probe",
    "protocol", "nominal_accuracy", "adversarial_accuracy", "recomputed_accuracy", "n_attacked", "n_broken_first",
    "max_perturbation",
    *EVIDENCE_COLUMNS, *CHECK_COLUMNS, "n_rejected", "checks_passed", "check_thresholds", "warnings", "verified",
    "certified_accuracy", "certified_by",
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
                                   "check_thresholds", "verified", "machine", "protocol", "probe", "certified_by")},
    **{c: (_int, True) for c in ("n_classes", "n_examples", "seed")},
    **{c: (_int, False) for c in ("steps", "restarts", "n_probe_labels", "n_attacked", "n_broken_first",
                                  "n_rejected", "threads")},
    **{c: (_unit, True) for c in ("nominal_accuracy", "adversarial_accuracy")},
    **{c: (_unit, False) for c in ("recomputed_accuracy", "probe_train_accuracy", "label_fraction",
                                   "certified_accuracy", *EVIDENCE_COLUMNS)},
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


def cell_key(row: dict) -> tuple:
    """A cell's identity: the row key without the radius, as text (so CSV round trips compare equal)."""
    return tuple(str(row[k]) for k in KEY if k != "radius" and _keyed(row, k))


def cell_keys(df: pd.DataFrame) -> list[tuple]:
    return [cell_key(r) for r in df.to_dict("records")]


def row_key(row: dict[str, Any]) -> str:
    """The row's key (``KEY``) as text that compares equal across CSV and JSON round trips."""
    return json.dumps([str(row[k]) if k != "radius" else float(row[k]) for k in KEY if _keyed(row, k)])


# The fields ``encoder_row`` sets: what every row of one encoder, task and probe shares.
ENCODER_FIELDS = (
    "learner", "label", "run", "checkpoint", "source", "learner_config", "arch", "dataset", "task", "n_classes",
    "n_examples", "label_fraction", "n_probe_labels", "probe", "seed", "encoder_sha256", "probe_sha256",
    "probe_train_accuracy", "robrep_version", "torch_version", "device", "machine", "threads", "train_seconds",
)


def encoder_fields(row: dict[str, Any]) -> dict[str, Any]:
    """The ``ENCODER_FIELDS`` of a stored row (e.g. a cell's, to build the worst case of its task)."""
    return {k: row[k] for k in ENCODER_FIELDS}


def passed(row: dict) -> bool:
    """A row's checks passed: none of ``CHECK_COLUMNS`` is False (None: the check does not apply)."""
    return not any(is_false(row.get(c)) for c in CHECK_COLUMNS)


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def is_false(v: Any) -> bool:
    return not is_missing(v) and not bool(v)


def radius_grid(radii) -> list[float]:
    """Radii as sorted distinct floats: the order attacks visit them and results store them in."""
    return sorted(set(float(r) for r in radii))


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` in which what older results, or learners without the field, leave empty or out is
    filled in: label fraction, warnings, architecture and label. ``merge`` and ``read_results`` return
    normalized rows."""
    import pandas as pd

    df = df.copy()
    # rows from before the option: all labels
    df["label_fraction"] = df.get("label_fraction", pd.Series(1.0, index=df.index)).fillna(1.0).astype(float)
    # rows from before probe modes: the probe fitted on clean features
    df["probe"] = df.get("probe", pd.Series(STANDARD_PROBE, index=df.index)).astype(object).fillna(STANDARD_PROBE) \
        .replace("", STANDARD_PROBE).astype(str)
    # rows from before the cascade: every attack attacked every point
    df["protocol"] = df.get("protocol", pd.Series("per-attack", index=df.index)).astype(object).fillna("per-attack") \
        .replace("", "per-attack").astype(str)
    # no warnings; a learner without an architecture choice; rows from before provenance was recorded
    for column in ("warnings", "arch", "source"):
        df[column] = df.get(column, pd.Series("", index=df.index)).astype(object).fillna("").astype(str)
    if "learner" in df:  # rows from before labels: the learner's name
        df["label"] = df.get("label", df["learner"]).astype(object).fillna(df["learner"])
    return df
