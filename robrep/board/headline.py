"""The headline table of a board: per data set, task and threat model, one row per encoder and
protocol, ranked by robust accuracy at the headline radius, as RobustBench's leaderboard shows models.

A row is one encoder (its run and SHA-256) under one protocol: the test points (``n_examples``, ``seed``),
the probe's labels (``label_fraction``) and the attacks. Its numbers are the worst case over every attack of
that protocol where the run has one; an encoder without a worst case is shown by its strongest single attack
and marked ``single attack`` (an upper bound: more attacks can only lower it). Rows that differ in any
protocol field are never merged. Each attack's own row stays in the board's CSV (the per-attack detail).
"""
from __future__ import annotations

import json
import math

import pandas as pd

from robrep.board.tables import headline_radius
from robrep.protocols import REQUIRED_CHECKS
from robrep.rows.layout import is_missing as _missing


def is_missing(v) -> bool:
    """Empty in either form a board holds: NaN as read, or "" once filled for rendering."""
    return _missing(v) or (isinstance(v, str) and v.strip() == "")

# what a headline row is: an encoder under one protocol
ENCODER = ("label", "learner", "run", "encoder_sha256", "arch")
PROTOCOL = ("n_examples", "seed", "label_fraction")
PLACE = ("dataset", "task", "norm", "probe")  # one ranking each: a standard and an adversarial probe never share one


def place_title(place: tuple) -> str:
    """A ranking's place in words: ``mnist5k / digit (linf)``, and the probe where it is not the standard one."""
    dataset, task, norm, probe = place
    return f"{dataset} / {task} ({norm}{'' if probe == 'standard' else ', ' + probe + ' probe'})"


def _attacks(config: str) -> list[str]:
    """The attacks a worst case covers (``suite/name``), from its attack_config."""
    try:
        parsed = json.loads(config)
    except (TypeError, ValueError):
        return []
    return [a.split(":", 1)[0] for a in parsed if a != "cascade"] if isinstance(parsed, list) else []


def _native_loss(config: str) -> str:
    """``PGD on <loss>`` where a worst case's robrep PGD used a loss other than cross-entropy (two worst cases that
    differ only there are told apart), else empty."""
    try:
        parsed = json.loads(config)
    except (TypeError, ValueError):
        return ""
    for entry in parsed if isinstance(parsed, list) else []:
        name, _, attack = entry.partition(": ")
        if name.startswith("native/"):
            try:
                loss = json.loads(attack).get("loss", "ce")
            except (ValueError, AttributeError):
                continue
            if loss != "ce":
                return f"PGD on {loss}"
    return ""


def _budget(rows: pd.DataFrame, attacks: list[str] | None) -> str:
    """The attack budget of a protocol, in words: the number of attacks, the largest steps x restarts, and
    the queries of black-box attacks (``n_queries`` in their configs)."""
    own = rows[rows["suite"] != "worst-case"]
    if attacks is not None:  # the worst case's own attacks
        names = own["suite"].astype(str) + "/" + own["attack"].astype(str)
        own = own[names.isin(attacks)]
    steps = [(int(s), int(r)) for s, r in zip(own["steps"], own["restarts"])
             if not is_missing(s) and not is_missing(r)]
    queries = []
    for cfg in own["attack_config"].dropna().unique():
        try:
            q = json.loads(cfg).get("kwargs", {}).get("n_queries")
        except (ValueError, AttributeError):
            q = None
        if q:
            queries.append(int(q))
    n = len(attacks) if attacks is not None else own[["suite", "attack"]].drop_duplicates().shape[0]
    parts = [f"{n} attack{'s' if n != 1 else ''}"]
    if steps:
        s, r = max(steps, key=lambda sr: sr[0] * sr[1])
        parts.append(f"{s} x {r}")
    if queries:
        parts.append(f"{max(queries)} queries")
    return ", ".join(parts)


def headline_table(board: pd.DataFrame, radii: list[float] | None = None) -> pd.DataFrame:
    """One row per (data set, task, norm, encoder, protocol), ranked within each (data set, task, norm) by the
    adversarial accuracy at the headline radius (``results.headline_radius``), then by clean accuracy.

    Columns: the place (dataset, task, norm), ``rank``, the encoder (label, learner, arch, run, encoder_sha256),
    ``clean``, one column per radius ``r=<radius>`` (the worst case, or the strongest single attack), ``measure``
    ("worst case" or "single attack: <suite/attack>"), ``budget``, the protocol (n_examples, seed,
    label_fraction), provenance (source, robrep_version), ``checks`` ("passed" or the number of rows that
    failed one) and ``warnings`` (rows with a warning). ``attrs["headline"]``: the headline radius per place."""
    if board.empty:
        return pd.DataFrame()
    if "probe" not in board:  # hand-made frames and rows from before probe modes
        board = board.assign(probe="standard")
    out, headline = [], {}
    for place, rows in board.groupby(list(PLACE), sort=True):
        r_head = headline_radius(rows["radius"], place[0], place[2])
        headline[place] = r_head
        wanted = sorted(float(r) for r in (radii or rows["radius"].unique()))
        for key, g in rows.groupby(list(ENCODER) + list(PROTOCOL), sort=True, dropna=False):
            worst = g[g["suite"] == "worst-case"]
            series = []  # (measure, rows at each radius, attacks covered or None)
            for config, w in worst.groupby("attack_config", sort=True):
                how = [w for w in ("cascade" if "cascade" in json.loads(config) else "", _native_loss(config)) if w]
                series.append(("worst case" + (f" ({'; '.join(how)})" if how else ""), w, _attacks(config)))
            if not series:  # no worst case: the strongest single attack at the headline radius
                single = g[g["suite"] != "worst-case"]
                at = single[(single["radius"] - r_head).abs() < 1e-9]
                pick = at if len(at) else single
                best = pick.sort_values(["adversarial_accuracy", "suite", "attack"]).iloc[0]
                same = (single["suite"] == best["suite"]) & (single["attack"] == best["attack"]) & \
                       (single["attack_config"] == best["attack_config"])
                series.append((f"single attack: {best['suite']}/{best['attack']}", single[same], None))
            for measure, s, attacks in series:
                acc = {float(r): float(a) for r, a in zip(s["radius"], s["adversarial_accuracy"])}
                row = dict(zip(PLACE, place))
                row.update(dict(zip(list(ENCODER) + list(PROTOCOL), key)))
                row["clean"] = float(s["nominal_accuracy"].iloc[0])
                for r in wanted:
                    row[f"r={r:g}"] = acc.get(r, math.nan)
                row["headline"] = acc.get(r_head, math.nan)
                # the certified lower bound (robrep certify), where the rows have one: robust accuracy lies between
                sure = {float(r): float(c) for r, c in zip(s["radius"], s.get("certified_accuracy", [math.nan] * len(s)))
                        if not is_missing(c)}
                for r in wanted:
                    row[f"c={r:g}"] = sure.get(r, math.nan)
                row["measure"] = measure
                row["budget"] = _budget(g, attacks)
                row["source"] = next((v for v in g.get("source", pd.Series(dtype=object)) if not is_missing(v)), "")
                row["robrep_version"] = str(s["robrep_version"].iloc[0])
                row["checks"] = _checks_words(s)
                row["warnings"] = int((s.get("warnings", pd.Series("", index=s.index)).astype(object).fillna("").astype(str) != "").sum())
                out.append(row)
    table = pd.DataFrame(out)
    table = table.sort_values(list(PLACE) + ["headline", "clean", "label"], ascending=[True] * len(PLACE) + [False, False, True],
                              na_position="last", kind="mergesort").reset_index(drop=True)
    table.insert(len(PLACE), "rank", table.groupby(list(PLACE)).cumcount() + 1)
    table.attrs["headline"] = headline
    return table


def radius_columns(table: pd.DataFrame, with_zero: bool = False) -> list[str]:
    """The table's ``r=<radius>`` columns in radius order; without ``r=0`` unless asked (it is ``clean``)."""
    cols = sorted((c for c in table.columns if c.startswith("r=")), key=lambda c: float(c[2:]))
    return cols if with_zero else [c for c in cols if c != "r=0"]


def _checks_words(rows: pd.DataFrame) -> str:
    """A series' checks in words: ``passed`` or ``N failed`` (radii where a check that is evidence of a broken
    attack or model failed), and the radii where the attack had not converged (more budget would still lower the
    number: a warning, not a failure)."""
    from robrep.rows.layout import is_false

    failed = slow = 0
    for _, r in rows.iterrows():
        not_converged = is_false(r.get("check_converged"))
        slow += not_converged
        # a row that failed for any reason but convergence alone
        failed += not bool(r["checks_passed"]) and not (
            not_converged and not any(is_false(r.get(c)) for c in REQUIRED_CHECKS))
    words = "passed" if not failed else f"{failed} failed"
    return words + (f", not converged at {slow} {'radius' if slow == 1 else 'radii'}" if slow else "")


def checks_text(row) -> str:
    """A headline row's checks in words: ``passed`` or ``N failed``, and its warnings."""
    return row["checks"] + (f", {row['warnings']} warning(s)" if row["warnings"] else "")


def headline_markdown(table: pd.DataFrame) -> list[str]:
    """The headline table as Markdown lines, one section per (data set, task, norm); names escaped."""
    from robrep.escape import markdown as md

    lines = []
    radius_cols = radius_columns(table)
    for place, t in table.groupby(list(PLACE), sort=True):
        head = table.attrs.get("headline", {}).get(place)
        shown = [c for c in radius_cols if t[c].notna().any()]
        certified = f"c={head:g}" in t and t[f"c={head:g}"].notna().any()
        lines += [f"## {md(place_title(place))}: ranked by robust accuracy at radius {head:g}", "",
                  "| rank | encoder | arch | clean | " + " | ".join(shown) + " | "
                  + (f"certified at {head:g} | " if certified else "") + "measure | budget | points | labels "
                  "| run | encoder SHA-256 | checks |",
                  "|---:|---|---|---:|" + "---:|" * (len(shown) + certified) + "---|---|---:|---:|---|---|---|"]
        for _, r in t.iterrows():
            accs = " | ".join("" if r[c] != r[c] else (f"**{r[c]:.3f}**" if c == f"r={head:g}" else f"{r[c]:.3f}")
                              for c in shown)
            if certified:
                sure = r[f"c={head:g}"]
                accs += " | " + ("" if sure != sure else f"{sure:.3f}")
            checks = checks_text(r)
            lines.append(f"| {r['rank']} | {md(r['label'])} | {md(r['arch'])} | {r['clean']:.3f} | {accs} | "
                         f"{md(r['measure'])} | {md(r['budget'])} | {r['n_examples']} | {r['label_fraction']:g} | "
                         f"{md(r['run'])} | {md(str(r['encoder_sha256'])[:12])} | {md(checks)} |")
        lines.append("")
    return lines
