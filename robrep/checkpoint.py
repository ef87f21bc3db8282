"""Checkpoints: weights as safetensors plus a JSON config that records their SHA-256.

Nothing is ever unpickled. A checkpoint folder holds ``model.safetensors`` and
``config.json``. The config records ``sha256`` (of the weights) and ``checkpoint_sha256``
(of every other field of config.json, the weights' hash among them), so an edited config is detected
as surely as replaced weights; both are verified before anything is used.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from robrep._version import __version__
from robrep.io import atomic_write, sha256_bytes

log = logging.getLogger(__name__)

WEIGHTS, CONFIG = "model.safetensors", "config.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupted or does not match its config."""


def state_bytes(state: torch.nn.Module | dict[str, torch.Tensor]) -> bytes:
    """A module's state dict (or a dict of tensors) serialised as safetensors: contiguous CPU tensors,
    where tensors that share memory (tied weights) are stored as copies of their own."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    out, seen = {}, set()
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        v = v.detach().cpu().contiguous()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen and v.numel() else v
        seen.add(ptr)
    return st_save(out)


def _record_hash(meta: dict[str, Any]) -> str:
    """SHA-256 of a config's fields (but ``checkpoint_sha256``) as canonical JSON."""
    rest = {k: v for k, v in meta.items() if k != "checkpoint_sha256"}
    return sha256_bytes(json.dumps(rest, sort_keys=True).encode())


def save_checkpoint(learner: torch.nn.Module, out: str | os.PathLike, info: dict[str, Any] | None = None) -> Path:
    """Save ``learner`` (a registered learner) to folder ``out``; returns the folder."""
    from robrep.learners.vae import config_record

    out = Path(out)
    weights = state_bytes(learner)
    meta = {
        "learner": learner.name,
        "config": config_record(learner.config),
        "sha256": sha256_bytes(weights),
        "robrep_version": __version__,
        "torch_version": torch.__version__,
        **(info or {}),
    }
    meta = json.loads(json.dumps(meta, default=str))  # as it will read back
    meta["checkpoint_sha256"] = _record_hash(meta)
    atomic_write(out / WEIGHTS, weights)  # weights first: a config only ever points at complete weights
    atomic_write(out / CONFIG, json.dumps(meta, indent=2).encode())
    log.info("saved %s to %s (sha256 %s)", learner.name, out, meta["sha256"][:12])
    return out


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's config.json, verified against its ``checkpoint_sha256``."""
    path = Path(path)
    cfg = path / CONFIG
    if not path.is_dir() or not cfg.is_file() or not (path / WEIGHTS).is_file():
        raise CheckpointError(
            f"{path} is not a robrep checkpoint: expected a folder holding {WEIGHTS} and {CONFIG}"
        )
    try:
        meta = json.loads(cfg.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg} is not valid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{cfg} must hold a JSON object, got {type(meta).__name__}")
    missing = [k for k in ("learner", "config", "sha256", "checkpoint_sha256") if k not in meta]
    if missing:
        old = " (it was saved by robrep < 0.2.0, whose configs are not covered by a hash: train it again)" \
            if missing == ["checkpoint_sha256"] else ""
        raise CheckpointError(f"{cfg} lacks the key(s) {', '.join(missing)}{old}")
    if _record_hash(meta) != meta["checkpoint_sha256"]:
        raise CheckpointError(f"{cfg} was edited after it was saved: its fields do not match the "
                              f"checkpoint_sha256 it records, so its learner and config cannot be trusted")
    return meta


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """Rebuild a learner from a checkpoint folder through the registry; verifies the SHA-256 first."""
    from robrep.learners import create_learner
    from robrep.learners.vae import config_from_record
    from robrep.registry import LEARNERS

    path = Path(path)
    meta = read_config(path)
    data = (path / WEIGHTS).read_bytes()
    digest = sha256_bytes(data)
    if digest != meta["sha256"]:
        raise CheckpointError(
            f"{path / WEIGHTS} is corrupted or was replaced: its SHA-256 is {digest}, "
            f"but {CONFIG} records {meta['sha256']}"
        )
    try:
        config_class = getattr(LEARNERS.get(meta["learner"]), "config_class", None)
        learner = create_learner(meta["learner"], **config_from_record(config_class, meta["config"]))
    except Exception as e:  # an unknown learner (plugin not installed) or a config it refuses
        raise CheckpointError(f"{path} holds learner {meta['learner']!r}, which cannot be built here: "
                              f"{type(e).__name__}: {e}") from e
    try:
        state = st_load(data)
    except Exception as e:  # safetensors raises its own error type for a damaged file
        raise CheckpointError(f"{path / WEIGHTS} is not a valid safetensors file: {type(e).__name__}: {e}") from e
    try:
        learner.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {path} do not fit learner {meta['learner']!r}: {e}") from e
    learner.to(map_location).eval()
    learner.run_info = meta
    return learner
