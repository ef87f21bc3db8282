"""The families compared on one board: each learner at the headline radius under both probe modes, its training
time as a multiple of the VAE's, a figure of clean against robust accuracy, and where the Smooth Encoder stands.

Read from a board's ranked rows (``robrep.board.headline``) and each learner's card (``robrep.learners.cards``);
the documentation's family page and the README's sentence are generated from here (``robrep.board.blocks``).
"""
from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from robrep.io import atomic_write

SE = "se-adversarial"  # the paper's learner, the one the comparison is about


def family_table(board: pd.DataFrame, arch: str = "mlp", task: str | None = None) -> pd.DataFrame:
    """One row per learner of ``board`` (its entries of architecture ``arch``, with the MLPs those of an architecture
    of their own; one task): family, whether it uses labels, clean and robust accuracy at the headline radius
    with the standard probe and with the adversarial one, training seconds as a multiple of the VAE's, and what
    the protocol took in minutes (training and every attack cell, as the rows record them) under each probe;
    ranked by robust accuracy with the standard probe."""
    from robrep.board.headline import headline_table
    from robrep.learners.cards import card

    # encoders with an architecture of their own (a plugin's PCA, random features: no ``arch``) sit with the MLPs
    own = ~board["arch"].isin(("mlp", "conv", "resnet18"))
    rows = board[(board["arch"] == arch) | (own if arch == "mlp" else False)]
    if task is not None:
        rows = rows[rows["task"] == task]
    table = headline_table(rows)
    if table.empty:
        return pd.DataFrame()
    if table["task"].nunique() > 1:
        raise ValueError(f"the board holds tasks {sorted(set(table['task']))}: choose one")
    trained = rows.groupby("learner")["train_seconds"].max().fillna(0.0)  # an encoder robrep never trained: 0
    vae = trained.get("vae")
    cells = rows[rows["suite"] != "worst-case"].drop_duplicates(["learner", "probe", "task", "suite", "attack"])
    attacked = cells.groupby(["learner", "probe"])["wall_seconds"].sum()  # the protocol's attacks, per probe
    out = []
    for learner, g in table.groupby("learner", sort=True):
        about = card(learner)
        listed = [f for f in rows.loc[rows["learner"] == learner].get("family", pd.Series(dtype=str))
                  if isinstance(f, str) and f]
        line = {"learner": learner, "name": learner,  # a plugin learner without a card: its board entry's family
                "family": about.family if about else (listed[0] if listed else ""),
                "uses_labels": bool(about and about.uses_labels),
                "train_vs_vae": float(trained.get(learner, float("nan")) / vae) if vae else float("nan")}
        for probe, key in (("standard", "standard"), ("adversarial", "adversarial")):
            hit = g[g["probe"].str.startswith(probe)]
            line[f"clean_{key}"] = float(hit["clean"].iloc[0]) if len(hit) else float("nan")
            line[f"robust_{key}"] = float(hit["headline"].iloc[0]) if len(hit) else float("nan")
            seconds = [attacked.get((learner, p), 0.0) for p in set(hit["probe"])]
            line[f"minutes_{key}"] = (sum(seconds) + trained.get(learner, 0.0)) / 60 if len(hit) else float("nan")
        out.append(line)
    result = pd.DataFrame(out).sort_values(["robust_standard", "clean_standard"], ascending=False,
                                           na_position="last", kind="mergesort").reset_index(drop=True)
    result.attrs["headline"] = next(iter(table.attrs["headline"].values()))
    return result


def standing(table: pd.DataFrame) -> str:
    """One sentence: where the Smooth Encoder stands among the families with the standard probe and with the
    adversarial one, and who is ahead of it (from ``family_table``)."""
    head = table.attrs.get("headline", 0.1)
    ranked = _ranked(table, "standard")
    if SE not in set(ranked["learner"]):
        return "the Smooth Encoder has no entry on this board yet"
    text = (f"at radius {head:g}, the Smooth Encoder (adversarial selection) keeps "
            f"{_place(ranked, 'standard', ' of the test digits with the standard probe, ')}")
    adversarial = _ranked(table, "adversarial")
    if SE in set(adversarial["learner"]):
        text += f"; with the adversarial probe it keeps {_place(adversarial, 'adversarial', ', ')}"
    elif len(adversarial):
        best = adversarial.iloc[0]
        text += f"; with the adversarial probe the best is {best['name']} ({best['robust_adversarial']:.3f})"
    return text


def _ranked(table: pd.DataFrame, probe: str) -> pd.DataFrame:
    column = f"robust_{probe}"
    return (table.dropna(subset=[column]).sort_values(column, ascending=False, kind="mergesort")
            .reset_index(drop=True))


def _place(ranked: pd.DataFrame, probe: str, what: str) -> str:
    """The Smooth Encoder's share under ``probe``, its place among ``ranked``, and who is ahead of it (or next)."""
    column = f"robust_{probe}"
    place = int(ranked.index[ranked["learner"] == SE][0]) + 1
    text = (f"{ranked.iloc[place - 1][column]:.3f}{what}{_ordinal(place)} of {len(ranked)} learners from "
            f"{ranked['family'].nunique()} families")
    ahead = ranked.iloc[:place - 1]
    if len(ahead):
        return text + " behind " + ", ".join(f"{r['name']} ({r[column]:.3f}{', uses labels' if r['uses_labels'] else ''})"
                                             for _, r in ahead.iterrows())
    nxt = ranked.iloc[1] if len(ranked) > 1 else None
    return text + (f", ahead of {nxt['name']} ({nxt[column]:.3f})" if nxt is not None else "")


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 11 <= n % 100 <= 13 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def plot_families(table: pd.DataFrame, path: str | Path, title: str) -> Path:
    """Clean against robust accuracy at the headline radius, one point per learner and probe mode (filled: the
    standard probe; hollow: the adversarial one, joined to it), coloured by the learner's fixed colour."""
    from robrep.board.plots import _figure, encoder_colour

    fig = _figure(figsize=(7.5, 5.5), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for _, r in table.iterrows():
        colour = encoder_colour(r["learner"])
        xs = [r["robust_standard"], r["robust_adversarial"]]
        ys = [r["clean_standard"], r["clean_adversarial"]]
        if xs[1] == xs[1]:
            ax.plot(xs, ys, color=colour, lw=0.8, alpha=0.6)
            ax.scatter([xs[1]], [ys[1]], s=40, facecolors="white", edgecolors=colour, zorder=3)
        ax.scatter([xs[0]], [ys[0]], s=40, color=colour, zorder=3,
                   marker="s" if r["uses_labels"] else "o")
        ax.annotate(f"{r['learner']}{' (labels)' if r['uses_labels'] else ''}", (xs[0], ys[0]), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    head = table.attrs.get("headline", 0.1)
    ax.set_xlabel(f"robust accuracy at radius {head:g} (worst case of the protocol's attacks)")
    ax.set_ylabel("clean accuracy")
    ax.set_title(title + "\nfilled: standard probe; hollow: adversarial probe; squares: trained on labels", fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(Path(path), buf.getvalue())
    return Path(path)
