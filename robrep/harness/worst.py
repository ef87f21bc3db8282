"""The worst case of a task: per radius and point, robust only if every attack that ran failed on it; with the
warnings of attacks that disagree in a way that signals a weak attack or gradient masking."""
from __future__ import annotations

import json
from typing import Any

import pandas as pd
import torch

from robrep.attacks import Attack
from robrep.harness.cells import check_warnings
from robrep.rows.layout import CHECK_COLUMNS, LATE_MAX, is_missing, passed, radius_grid, row_key


def consistency_warnings(accuracy: list[tuple[Attack, float]]) -> list[str]:
    """What a sound evaluation expects: iterative attacks should beat single-step ones, and a black-box attack
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
        _combine_evidence(row, at_r, only_late[i] if per_point else None)
        row["n_rejected"] = int(sum(int(v["n_rejected"]) for _, v in at_r))
        row["check_thresholds"] = first.get("check_thresholds")
        # its own checks decide: an attack's failure shows in the worst case's check only where it can move it
        row["checks_passed"] = passed(row)
        own = check_warnings({k: row[k] for k in ("suite", "check_noise_floor", "check_converged", "late_share",
                                                  "last_restart_share", "noise_accuracy")})
        row["warnings"] = "; ".join(w for w in [*own, row["warnings"]] if w)
        rows.append(row)
    return rows


def _combine_evidence(row: dict, at_r: list[tuple[Attack, Any]], only_late: torch.Tensor | None) -> None:
    """The worst case's evidence at one radius, from its attacks' rows ``at_r`` (``only_late``: per point, broken
    late by every attack that broke it, where every cell recorded it). Each check holds if it holds for every
    attack, except exploration: the worst case's robust points were explored if some attack explored its own
    robust points (a superset), and there is nothing to explore when none is left."""
    for col in CHECK_COLUMNS:
        applies = [bool(v[col]) for _, v in at_r if not is_missing(v.get(col))]
        row[col] = (any if col == "check_explored" else all)(applies) if applies else None
    if row["adversarial_accuracy"] == 0:
        row["check_explored"] = None
    for col, pick in (("late_share", max), ("last_restart_share", max), ("explored_share", min)):
        known = [float(v[col]) for _, v in at_r if not is_missing(v.get(col))]
        row[col] = pick(known) if known else None
    if only_late is not None and any(not is_missing(v.get("late_share")) for _, v in at_r):
        row["late_share"] = only_late.float().mean().item()
        row["last_restart_share"] = None  # part of late_share here
        row["check_converged"] = row["late_share"] <= LATE_MAX
    noise = [float(v["noise_accuracy"]) for _, v in at_r if not is_missing(v.get("noise_accuracy"))]
    row["noise_accuracy"] = min(noise) if noise else None
    if noise:
        row["check_noise_floor"] = row["adversarial_accuracy"] <= row["noise_accuracy"]


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
