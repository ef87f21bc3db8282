"""PNG figures. matplotlib is driven through its object API with the Agg canvas, so the
user's global backend is never touched; it is imported when a figure is drawn (0.6 s a process start saves)."""
from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
from robrep.io import atomic_write
from robrep.rows.layout import normalize


# Fixed colours: the built-in learners always get these; any other label a colour derived from its name, so an
# encoder has the same colour in every panel of every file.
_FIXED = {"vae": "#1f77b4", "beta-vae": "#ff7f0e", "se-random": "#2ca02c", "se-adversarial": "#d62728",
          "se-fgsm": "#9467bd", "se-warm": "#8c564b",
          # the reference families
          "ae": "#17becf", "dae": "#8c6d31", "beta-tcvae": "#e377c2", "simclr": "#393b79", "rocl": "#a55194",
          "supervised": "#637939", "supervised-at": "#bcbd22", "random-init": "#7f7f7f"}
_PALETTE = ("#636363", "#8ca252", "#bd9e39", "#7b4173", "#de9ed6", "#9edae5", "#c49c94", "#dbdb8d", "#6b6ecf",
            "#e7969c", "#cedb9c", "#b5cf6b")  # none of the fixed colours
_ARCH_STYLE = {"mlp": "-", "conv": "--"}  # line style by architecture (others dotted)


def _figure(**kwargs):
    """A matplotlib Figure on its own Agg canvas (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def encoder_colour(label: str) -> str:
    """The colour of an encoder label in every robrep plot."""
    import hashlib

    from matplotlib.colors import to_hex, to_rgb

    label = str(label)
    if label in _FIXED:
        return _FIXED[label]
    h = int(hashlib.sha256(label.encode()).hexdigest()[:8], 16)
    base = label.split(":", 1)[0]
    if base in _FIXED:  # a labelled variant of a built-in learner: a lighter or darker shade of its colour
        shade = (0.25, 0.45, -0.25, -0.45, 0.6, -0.6)[h % 6]
        rgb = to_rgb(_FIXED[base])
        rgb = [c + (1 - c) * shade if shade > 0 else c * (1 + shade) for c in rgb]
        return to_hex(rgb)
    return _PALETTE[h % len(_PALETTE)]


def robustness_panels(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """The panels of ``plot_robustness``: ((dataset, task, norm, n_examples, seed, label_fraction, probe),
    headline rows), one per data set, task, threat model and protocol (the probe mode included), with every encoder of ``df`` in it: its worst
    case, or its strongest single attack (``robrep.board.headline``)."""
    from robrep.board.headline import headline_table

    defaults = {"learner_config": "{}", "n_examples": 0, "norm": "linf", "seed": 0, "encoder_sha256": "",
                "nominal_accuracy": float("nan"), "checks_passed": True, "robrep_version": "",
                "attack_config": "{}", "steps": None, "restarts": None}  # hand-made frames
    df = normalize(df.assign(**{c: v for c, v in defaults.items() if c not in df}))
    if "learner" not in df:
        df = df.assign(learner=df.get("label", "encoder"), label=df.get("label", "encoder"))
    table = headline_table(df)
    if table.empty:
        return []
    return list(table.groupby(["dataset", "task", "norm", "n_examples", "seed", "label_fraction", "probe"], sort=True))


def line_labels(rows: pd.DataFrame) -> list[str]:
    """A legend label per headline row of a panel: the encoder's label and architecture, how it was measured
    where it is not a worst case, and its run where two rows would still read alike."""
    texts = []
    for _, r in rows.iterrows():
        text = f"{r['label']}" + (f" ({r['arch']})" if r["arch"] else "")
        if not str(r["measure"]).startswith("worst case"):
            text += f" [{r['measure']}: upper bound]"
        texts.append(text)
    return [t if texts.count(t) == 1 else f"{t} {r}" for t, r in zip(texts, rows["run"])]


def plot_robustness(df: pd.DataFrame, path: str | Path) -> Path:
    """Adversarial accuracy against the attack radius: one panel per (data set, task, threat model, protocol),
    one line per encoder in it, in its fixed colour (``encoder_colour``), solid for MLPs and dashed for ConvNets;
    the worst case over every attack of the protocol, or (marked, hollow markers) an encoder's strongest single
    attack. Where the rows carry certified lower bounds (``robrep certify``), a shaded band runs from the certified
    curve (dotted) up to the attacked one: the encoder's robust accuracy lies inside it. Like the paper's figures 4
    and 5; data sets with many tasks as task bars (Table 1)."""
    from robrep.board.headline import radius_columns
    from robrep.board.tables import many_task_datasets, task_table

    many = many_task_datasets(df) if "dataset" in df and "task" in df else []
    tables = [(d, task_table(df[df["dataset"] == d])) for d in many]
    panels = robustness_panels(df[~df["dataset"].isin(many)]) if len(many) < df["dataset"].nunique() else []
    if not panels and not tables:
        raise ValueError("no result rows to plot")
    cols = min(3, len(panels)) if panels else 1
    rows = math.ceil(len(panels) / cols)
    heights = [0.32 * len(t) + 1.2 for _, t in tables] + [3.8] * rows
    fig = _figure(figsize=(max(5.0 * cols, 8.0), sum(heights)), dpi=110)
    grid = fig.add_gridspec(len(heights), cols, height_ratios=heights)
    for i, (dataset, tt) in enumerate(tables):
        _task_bars(fig.add_subplot(grid[i, :]), dataset, tt)
    for i, ((dataset, task, norm, n, seed, fraction, probe), sub) in enumerate(panels):
        ax = fig.add_subplot(grid[len(tables) + i // cols, i % cols])
        radius_cols = radius_columns(sub, with_zero=True)
        for (_, r), label in zip(sub.iterrows(), line_labels(sub)):
            xs = [float(c[2:]) for c in radius_cols if r[c] == r[c]]
            ys = [r[c] for c in radius_cols if r[c] == r[c]]
            worst = str(r["measure"]).startswith("worst case")
            colour = encoder_colour(r["label"])
            ax.plot(xs, ys, marker="o", ms=3.5, color=colour, linestyle=_ARCH_STYLE.get(r["arch"], ":"),
                    markerfacecolor=colour if worst else "white", label=label)
            sure = [r.get("c=" + c[2:], math.nan) for c in radius_cols if r[c] == r[c]]
            if any(v == v for v in sure):  # the certified lower bound: robust accuracy lies in the band
                low = [v if v == v else 0.0 for v in sure]
                ax.fill_between(xs, low, ys, color=colour, alpha=0.15, linewidth=0)
                ax.plot(xs, low, color=colour, linestyle=":", linewidth=1)
        budgets = sorted(set(sub["budget"]))
        probed = "" if probe == "standard" else f", {probe} probe"
        if any(c.startswith("c=") and sub[c].notna().any() for c in sub.columns):
            probed += "; band: certified (dotted) to attacked"
        ax.set_title(f"{dataset} / {task}: {n:g} points, seed {seed:g}, {fraction:g} of the labels{probed}\n"
                     f"worst case of {'; '.join(budgets)}", fontsize=8)
        ax.set_xlabel(f"attack radius ({'L-inf' if norm == 'linf' else 'L2' if norm == 'l2' else norm} norm)")
        ax.set_ylabel("adversarial accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(Path(path), buf.getvalue())
    return Path(path)


def _task_bars(ax, dataset: str, tt: pd.DataFrame) -> None:
    """A task table (``robrep.rows.task_table``) as bars: a row per task, per learner a pale bar for its
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


def image_grid(model, x, x_adv, y, eps: float, path: str | Path, title: str = "",
               class_names: tuple[str, ...] = (), norm: str = "linf", reconstruct=None) -> Path:
    """Clean images ``x``, their attacked versions ``x_adv`` (radius ``eps`` in ``norm``), and the decoder's
    reconstructions of both (paper figures 1 and 6): what the attack does to the representation. Predicted
    classes on top, by name (``class_names``, the task's) where they have one.

    ``model`` is the attacked classifier (a ProbedEncoder); ``reconstruct`` (images -> images), where the encoder
    has a decoder, adds the reconstructions. The figure only draws: the caller attacks (``robrep.harness.execute``)."""
    import torch

    rows = [("clean", x), (f"PGD, radius {eps:g}" if norm == "linf" else f"{norm.upper()} PGD, radius {eps:g}", x_adv)]
    with torch.no_grad():
        preds = [model(x).argmax(1), model(x_adv).argmax(1)]
        if reconstruct is not None:
            rows += [("reconstruction of clean", reconstruct(x)), ("reconstruction of PGD", reconstruct(x_adv))]
    n = x.shape[0]
    fig = _figure(figsize=(1.1 * n + 1.6, 1.25 * len(rows) + 0.4), dpi=110)
    for r, (name, imgs) in enumerate(rows):
        for i in range(n):
            ax = fig.add_subplot(len(rows), n, r * n + i + 1)
            img = imgs[i].detach().cpu().permute(1, 2, 0).clamp(*model.bounds).numpy()
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=model.bounds[0], vmax=model.bounds[1])
            ax.set_xticks([])
            ax.set_yticks([])
            if r < 2:
                ok = bool(preds[r][i] == y[i])
                k = int(preds[r][i])
                name = class_names[k] if k < len(class_names) else str(k)
                ax.set_title(f"pred {name}", fontsize=7, color="black" if ok else "red")
            if i == 0:
                ax.set_ylabel(name, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(Path(path), buf.getvalue())
    return Path(path)
