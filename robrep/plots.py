"""PNG figures. matplotlib is driven through its object API with the Agg canvas, so the
user's global backend is never touched."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from robrep.checkpoint import atomic_write
from robrep.results import normalize


def robustness_panels(df: pd.DataFrame, suite: str | None = None) -> list[tuple[tuple, pd.DataFrame]]:
    """The panels of ``plot_robustness``: ((dataset, task, arch, suite, attack, n_examples), rows), MLP and
    ConvNet encoders apart as in the paper's figure 5, and runs on different numbers of test points apart."""
    if suite is not None:
        df = df[df["suite"] == suite]
    defaults = {"learner_config": "{}", "n_examples": 0}  # hand-made frames; normalize fills the rest
    df = normalize(df.assign(**{c: v for c, v in defaults.items() if c not in df}))
    return list(df.groupby(["dataset", "task", "arch", "suite", "attack", "n_examples"], sort=True))


# short legend names for the settings that tell a panel's lines apart
_SHORT = {"selection_eps": "sel", "selection_steps": "L", "label_fraction": "labels"}


def line_labels(rows: pd.DataFrame) -> dict[tuple[str, float], str]:
    """A legend label for every line ((run, label_fraction)) of a panel (rows as ``robustness_panels`` gives
    them): the learner's label, plus the learner settings and label fraction that differ between the panel's
    lines (selection radius, budget L...). Lines that would still read alike are named by their run."""
    lines = rows.drop_duplicates(["run", "label_fraction"])
    settings = {}
    for run, fraction, label, config in zip(lines["run"], lines["label_fraction"], lines["label"],
                                            lines["learner_config"]):
        try:
            config = json.loads(config) if isinstance(config, str) else {}
        except json.JSONDecodeError:
            config = {}
        settings[(run, fraction)] = (label, {**config, "label_fraction": fraction})
    varying = sorted({k for _, c in settings.values() for k in c
                      if len({json.dumps(c2.get(k)) for _, c2 in settings.values() if k in c2}) > 1},
                     key=lambda k: (k == "label_fraction", k))  # the learner's settings, then the labels
    names = {}
    for key, (label, config) in settings.items():
        shown = [f"{_SHORT.get(k, k)} {config[k]:g}" if isinstance(config[k], (int, float)) else
                 f"{_SHORT.get(k, k)} {config[k]}" for k in varying if k in config]
        names[key] = f"{label} ({', '.join(shown)})" if shown else str(label)
    texts = list(names.values())
    return {key: (text if texts.count(text) == 1 else f"{key[0]} ({text})") for key, text in names.items()}


def plot_robustness(df: pd.DataFrame, path: str | Path, suite: str | None = None) -> Path:
    """Adversarial accuracy against attack radius, one panel per (dataset, task, architecture, attack), one line
    per run.

    Like the paper's figures 4 and 5. ``suite`` selects the rows of one suite (default: all).
    """
    from robrep.results import many_task_datasets, task_table

    many = many_task_datasets(df) if "dataset" in df and "task" in df else []
    tables = [(d, task_table(df[df["dataset"] == d])) for d in many]  # every attack, not just ``suite``
    panels = robustness_panels(df[~df["dataset"].isin(many)], suite) if len(many) < df["dataset"].nunique() else []
    if not panels and not tables:
        raise ValueError("no result rows to plot")
    cols = min(3, len(panels)) if panels else 1
    rows = math.ceil(len(panels) / cols)
    heights = [0.32 * len(t) + 1.2 for _, t in tables] + [3.4] * rows
    fig = Figure(figsize=(max(4.2 * cols, 8.0), sum(heights)), dpi=110)
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(heights), cols, height_ratios=heights)
    for i, (dataset, tt) in enumerate(tables):
        _task_bars(fig.add_subplot(grid[i, :]), dataset, tt)
    for i, ((dataset, task, arch, suite_, attack, n), sub) in enumerate(panels):
        ax = fig.add_subplot(grid[len(tables) + i // cols, i % cols])
        labels, lines = line_labels(sub), dict(list(sub.groupby(["run", "label_fraction"])))
        for key in sorted(labels, key=labels.get):
            line = lines[key].sort_values("radius")
            ax.plot(line["radius"], line["adversarial_accuracy"], marker="o", ms=3, label=labels[key])
        what = suite_ if attack == suite_ else f"{suite_}: {attack}"  # "worst-case", not "worst-case: worst-case"
        ax.set_title(f"{dataset} / {task}{f', {arch}' if arch else ''}, {n:g} points ({what})", fontsize=9)
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


def _task_bars(ax, dataset: str, tt: pd.DataFrame) -> None:
    """A task table (``robrep.results.task_table``) as bars: a row per task, per learner a pale bar for its
    nominal and a solid one for its adversarial accuracy."""
    import numpy as np

    learners = list(dict.fromkeys(lab for lab, _ in tt.columns))
    tasks = list(tt.index)[::-1]  # the first task on top
    width = 0.8 / len(learners)
    y = np.arange(len(tasks))
    for k, lab in enumerate(learners):
        colour = f"C{k}"
        pos = y + (len(learners) - 1 - k - (len(learners) - 1) / 2) * width
        ax.barh(pos, tt.loc[tasks, (lab, "nominal")], height=width, color=colour, alpha=0.3)
        marked = " (single attack)" if lab in tt.attrs["single_attack"] else ""
        ax.barh(pos, tt.loc[tasks, (lab, "adversarial")], height=width * 0.6, color=colour,
                label=f"{lab}{marked}: adversarial (solid), nominal (pale)")
    ax.set_yticks(y, tasks, fontsize=8)
    ax.set_xlim(0, 1.35)  # room on the right for the legend
    ax.set_xticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_xlabel(f"accuracy (adversarial: worst case at radius {tt.attrs['radius']:g})")
    ax.set_title(f"{dataset}: {len(tasks)} tasks, nominal and adversarial accuracy", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")


def attack_grid(model, x, y, eps: float, steps: int, path: str | Path, title: str = "") -> Path:
    """Clean images, their PGD versions at radius ``eps``, and the decoder's reconstructions of both
    (paper figures 1 and 6): what the attack does to the representation. Predicted classes on top.

    ``model`` is a ProbedEncoder; reconstructions are drawn when its encoder is a robrep learner (``decode``).
    The adversarial versions are the last PGD iterate (cross-entropy, step 2.5 eps / steps),
    shown whether or not they flip the decision.
    """
    import torch
    import torch.nn.functional as F

    x_adv = x.clone()
    if eps > 0:
        for _ in range(steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                grad = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)[0]
            x_adv = torch.min(torch.max(x_adv.detach() + 2.5 * eps / steps * grad.sign(), x - eps), x + eps).clamp(0, 1)
    rows = [("clean", x), (f"PGD, radius {eps:g}", x_adv)]
    from robrep.encoders import is_learner

    learner = model.encoder.module
    with torch.no_grad():
        preds = [model(x).argmax(1), model(x_adv).argmax(1)]
        if is_learner(learner) and callable(getattr(learner, "decode", None)):
            rows += [("reconstruction of clean", learner.decode(learner.encode(x)[0])),
                     ("reconstruction of PGD", learner.decode(learner.encode(x_adv)[0]))]
    n = x.shape[0]
    fig = Figure(figsize=(1.1 * n + 1.6, 1.25 * len(rows) + 0.4), dpi=110)
    FigureCanvasAgg(fig)
    for r, (name, imgs) in enumerate(rows):
        for i in range(n):
            ax = fig.add_subplot(len(rows), n, r * n + i + 1)
            img = imgs[i].detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r < 2:
                ok = bool(preds[r][i] == y[i])
                ax.set_title(f"pred {int(preds[r][i])}", fontsize=7, color="black" if ok else "red")
            if i == 0:
                ax.set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(Path(path), buf.getvalue())
    return Path(path)
