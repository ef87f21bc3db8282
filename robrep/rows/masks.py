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
