"""PNG figures. matplotlib is driven through its object API with the Agg canvas, so the
user's global backend is never touched."""
from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robrep.checkpoint import atomic_write


def plot_robustness(df: pd.DataFrame, path: str | Path, suite: str | None = None) -> Path:
    """Adversarial accuracy against attack radius, one panel per (dataset, task, attack), one line per run.

    Like the paper's figures 4 and 5. ``suite`` selects the rows of one suite (default: all).
    """
    if suite is not None:
        df = df[df["suite"] == suite]
    panels = list(df.groupby(["dataset", "task", "suite", "attack"], sort=True))
    if not panels:
        raise ValueError("no result rows to plot")
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.4 * rows), dpi=110)
    FigureCanvasAgg(fig)
    for i, ((dataset, task, suite_, attack), sub) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for label, line in sub.groupby("label" if "label" in sub else "run", sort=True):
            line = line.sort_values("radius")
            ax.plot(line["radius"], line["adversarial_accuracy"], marker="o", ms=3, label=label)
        ax.set_title(f"{dataset} / {task} ({suite_}: {attack})", fontsize=9)
        ax.set_xlabel("attack radius")
        ax.set_ylabel("adversarial accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(Path(path), buf.getvalue())
    return Path(path)
