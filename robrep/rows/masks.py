"""The per-example masks a cell saves beside its rows (which points stayed robust, which fell late): named by
what the cell is, so a resume finds them, and read back by the worst case."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

from robrep.io import atomic_write, short_hash
from robrep.rows.layout import cell_key, cell_keys, radius_grid


def done_cells(df: pd.DataFrame | None) -> dict[tuple, set[float]]:
    """For every cell (key without the radius) in ``df``: the radii it has rows for."""
    done: dict[tuple, set[float]] = {}
    if df is None or df.empty:
        return done
    for key, radius in zip(cell_keys(df), df["radius"].astype(float)):
        done.setdefault(key, set()).add(radius)
    return done


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
    """The (n_radii, N) bool masks ``save_masks`` wrote (``late`` is missing in files of older robreps)."""
    stored = load_file(path)
    return {k: stored[k].bool() for k in ("robust", "late") if k in stored}


def certified_path(folder: Path, run: str, dataset: str, task: str, method: str) -> Path:
    """Where ``robrep certify`` keeps a claim's certified points (per radius and test point), beside its attacks'
    masks; ``method`` as ``certified_by`` names it (e.g. ``crown``, ``alpha-crown+bab``)."""
    return Path(folder) / "examples" / run / f"{dataset}-{task}" / f"certified--{method}.safetensors"


def attacked_robust(folder: Path, df: pd.DataFrame, first, radii, attacks=None) -> torch.Tensor | None:
    """Per radius and test point, robust to every attack of the claim's cell (its masks; with ``attacks``, a
    predicate on an attack's name, to those it keeps), or None where the run kept no masks."""
    cell = df[(df["run"] == first["run"]) & (df["task"] == first["task"]) & (df["suite"] != "worst-case")
              & (df["probe"] == first.get("probe", "standard")) & (df["radius"] == 0)]
    robust = None
    for r in cell.to_dict("records"):
        if attacks is not None and not attacks(r["attack"]):
            continue
        path = masks_path(folder, r, radii)
        if not path.is_file():
            return None
        mask = load_masks(path)["robust"]
        robust = mask if robust is None else robust & mask
    return robust


def unsound_certificates(folder: Path, df: pd.DataFrame) -> list[str]:
    """Per claim of run folder ``folder`` that carries a certified number: why it cannot be published (a
    certified point that an attack of the run broke, or no per-point record to check it against); empty if every
    certificate holds point by point. Run by ``robrep leaderboard`` before it publishes a run folder."""
    from robrep.rows.layout import is_missing

    problems = []
    if "certified_accuracy" not in df:
        return problems
    sure_rows = df[[not is_missing(v) for v in df["certified_accuracy"]]]
    for (run, dataset, task, probe), rows in sure_rows.groupby(["run", "dataset", "task", "probe"], dropna=False):
        first = rows.iloc[0]
        name = str(first.get("certified_by", "")).split(" (")[0]
        path = certified_path(folder, run, dataset, task, name)
        if not name or not path.is_file():
            problems.append(f"{run} / {task}: certified numbers without their per-point record ({path.name}): "
                            f"run robrep certify {folder} again")
            continue
        radii = sorted(set(float(r) for r in df[(df["run"] == run) & (df["task"] == task)]["radius"]))
        robust = attacked_robust(folder, df, first, radii)
        stored = load_masks(path)["robust"]
        if robust is None or stored.shape != robust.shape:
            problems.append(f"{run} / {task}: the certified points cannot be set beside the attacks' masks")
            continue
        for i in (stored & ~robust).any(1).nonzero().flatten().tolist():
            problems.append(f"{run} / {task} at radius {radii[i]:g}: {int((stored[i] & ~robust[i]).sum())} "
                            "certified point(s) broken by an attack of the run: the certificate is unsound")
    return problems
