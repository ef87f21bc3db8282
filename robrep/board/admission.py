"""What a result row must be to be published, whatever its own flags say: complete provenance,
numbers consistent with each other, checks that recompute from the row's own evidence, and names that are
safe to become part of a file name.

``admission_errors(df)`` gives, per row that fails, the reasons; ``robrep.board.leaderboard.publish`` refuses a file
with any such row whole and names each one. A row's flags are a claim; these rules are what robrep can check
without the model: a contributed CSV that sets ``checks_passed`` True on a row whose adversarial accuracy is
above its nominal accuracy, or whose noise-floor evidence contradicts its flag, is refused.
"""
from __future__ import annotations

import math
import re

import pandas as pd

from robrep.rows.layout import CHECK_COLUMNS, EXPLORED_MIN, LATE_MAX, NORMS, is_missing

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}")  # no separators, no leading dot, no ".."
# provenance a row must carry to be published (besides the row layout's required columns)
PROVENANCE = ("learner", "run", "source", "learner_config", "encoder_sha256", "probe_sha256", "robrep_version",
              "torch_version", "machine", "timestamp")
# rows that were measured on the same points by the same attack, at several radii
SERIES = ("encoder_sha256", "run", "dataset", "task", "suite", "attack", "attack_config", "n_examples", "seed",
          "label_fraction")
TOL = 1e-6  # accuracies are fractions of at most a few thousand points, written with 10 significant digits


def safe_name(value) -> bool:
    """A value that may become part of a file name: letters, digits, ``_ . + -``, not starting with a dot."""
    return isinstance(value, str) and bool(SAFE_NAME.fullmatch(value)) and ".." not in value


def _number(v) -> float | None:
    return None if is_missing(v) else float(v)


def _flag(v) -> bool | None:
    if is_missing(v):
        return None
    return v if isinstance(v, bool) else str(v) in ("True", "true", "1")


def row_errors(row: dict, known_datasets: set[str] | None = None) -> list[str]:
    """Why one row cannot be published (empty: it can)."""
    errors = []
    dataset, norm = row.get("dataset"), row.get("norm")
    if not safe_name(dataset):
        errors.append(f"dataset {dataset!r} is not a plain name (letters, digits, _ . + -)")
    elif known_datasets is not None and dataset not in known_datasets:
        errors.append(f"dataset {dataset!r} is not a known data set ({', '.join(sorted(known_datasets))}; "
                      "a plugin's data set needs its plugin installed)")
    if norm not in NORMS:
        errors.append(f"norm {norm!r} is not one of {', '.join(NORMS)}")
    missing = [c for c in PROVENANCE if is_missing(row.get(c)) or str(row.get(c)).strip() == ""]
    if missing:
        errors.append(f"provenance missing: {', '.join(missing)}")
    nominal, adv = _number(row.get("nominal_accuracy")), _number(row.get("adversarial_accuracy"))
    radius = _number(row.get("radius"))
    if nominal is not None and adv is not None:
        if adv > nominal + TOL:
            errors.append(f"adversarial accuracy {adv:g} is above the nominal accuracy {nominal:g}")
        if radius == 0 and abs(adv - nominal) > TOL:
            errors.append(f"at radius 0 the adversarial accuracy {adv:g} differs from the nominal {nominal:g}")
    sure = _number(row.get("certified_accuracy"))
    if sure is not None and adv is not None and sure > adv + TOL:  # a lower bound above the upper one: unsound
        errors.append(f"certified accuracy {sure:g} is above the attacked {adv:g}: a certificate that an attack "
                      "contradicts is unsound")
    errors += _check_errors(row, adv)
    return errors


def _check_errors(row: dict, adv: float | None) -> list[str]:
    """The row's check flags against what its own evidence columns say."""
    errors = []
    flags = {c: _flag(row.get(c)) for c in CHECK_COLUMNS}
    if all(v is None for v in flags.values()):
        errors.append("no check was recorded (rows from before the checks cannot be published again)")
        return errors
    claimed = _flag(row.get("checks_passed"))
    really = all(v is not False for v in flags.values())
    if claimed is not None and claimed != really:
        errors.append(f"checks_passed says {claimed} but its checks say {really}")
    noise = _number(row.get("noise_accuracy"))
    if noise is None:
        errors.append("noise_accuracy (the noise-floor evidence) is missing")
    elif adv is not None and flags["check_noise_floor"] is not None \
            and flags["check_noise_floor"] != (adv <= noise + TOL):
        errors.append(f"check_noise_floor says {flags['check_noise_floor']} but the adversarial accuracy {adv:g} "
                      f"against the accuracy under noise {noise:g} says {adv <= noise + TOL}")
    late, last = _number(row.get("late_share")), _number(row.get("last_restart_share"))
    if late is not None and flags["check_converged"] is not None:
        converged = max(late, last or 0.0) <= LATE_MAX + TOL
        if flags["check_converged"] != converged:
            errors.append(f"check_converged says {flags['check_converged']} but late_share {late:g} "
                          f"(last restart {last or 0:g}) against {LATE_MAX} says {converged}")
    elif late is None and flags["check_converged"] is not None:
        errors.append("check_converged is set without late_share, its evidence")
    explored, n = _number(row.get("explored_share")), _number(row.get("n_examples"))
    if explored is not None and flags["check_explored"] is not None and adv is not None and n \
            and row.get("suite") != "worst-case":  # a worst case's exploration is any of its attacks'
        robust = adv * n
        ok = robust * (1 - explored) <= max((1 - EXPLORED_MIN) * robust, LATE_MAX * n) + 1e-6 * n + 1e-9
        if flags["check_explored"] != ok:
            errors.append(f"check_explored says {flags['check_explored']} but explored_share {explored:g} of "
                          f"{robust:g} robust points says {ok}")
    rejected = _number(row.get("n_rejected"))
    if rejected is not None and flags["check_guards"] is not None and flags["check_guards"] != (rejected == 0):
        errors.append(f"check_guards says {flags['check_guards']} but n_rejected is {rejected:g}")
    recomputed = _number(row.get("recomputed_accuracy"))
    if recomputed is not None and adv is not None and flags["check_consistent"] is True \
            and not math.isclose(recomputed, adv, abs_tol=TOL):
        errors.append(f"check_consistent says True but the recomputed accuracy {recomputed:g} differs from "
                      f"{adv:g}")
    return errors


def admission_errors(df: pd.DataFrame, known_datasets: set[str] | None = None) -> dict[int, list[str]]:
    """Per index of a row that cannot be published, the reasons (rows as ``read_results`` gives them). Besides
    each row's own rules: across radii, one attack's accuracy on the same points never rises with the radius."""
    errors: dict[int, list[str]] = {}
    for i, row in zip(df.index, df.to_dict("records")):
        reasons = row_errors(row, known_datasets)
        if reasons:
            errors[i] = reasons
    keys = [c for c in SERIES if c in df.columns]
    for _, series in df.sort_values("radius").groupby(keys, sort=False, dropna=False):
        acc = series["adversarial_accuracy"].astype(float).tolist()
        radii = series["radius"].astype(float).tolist()
        for k in range(1, len(series)):
            if acc[k] > acc[k - 1] + TOL:
                errors.setdefault(series.index[k], []).append(
                    f"adversarial accuracy rises with the radius: {acc[k - 1]:g} at {radii[k - 1]:g}, "
                    f"{acc[k]:g} at {radii[k]:g}")
    return errors
