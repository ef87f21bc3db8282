"""Unsupervised training of a registered learner on a data set's training split."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Callable

import torch

from robrep.checkpoint import save_checkpoint, short_hash
from robrep.data import Dataset, cache_dir, load_dataset
from robrep.learners import create_learner, learner_code, learner_source

log = logging.getLogger(__name__)

# callback(epoch, step, steps_per_epoch, parts) after every optimiser step; parts are floats
Callback = Callable[[int, int, int, dict[str, float]], None]


def resolve_device(device: str | torch.device | None) -> torch.device:
    device = torch.device(device or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device here")
    return device


def run_dir_for(learner: str, dataset: str, config: dict, seed: int) -> Path:
    """The cached checkpoint folder of a learner's full config and code: ``robrep train`` and ``robrep bench``
    share it, so a bench reuses what train made, and neither a changed config nor changed code (robrep's
    version, the plugin's distribution version, the learner's source file; see ``learner_code``) is
    ever served a stale checkpoint. The folder's own name (the run's name in results) depends on the
    config alone; the code key is the folder above it."""
    code = learner_code(learner)
    package = code["package"].replace(" ", "-") or "unpackaged"
    run = f"{learner}-{dataset}-{config.get('arch', 'custom')}-s{seed}-{short_hash(config)}"
    return cache_dir() / "runs" / f"{package}-{short_hash(code)}" / run


def train(
    learner: str,
    dataset: str | Dataset = "mnist5k",
    *,
    seed: int = 0,
    device: str | torch.device | None = "cpu",
    out: str | Path | None = None,
    callback: Callback | None = None,
    max_steps: int | None = None,
    **config,
):
    """Train learner ``learner`` on ``dataset`` and save it to ``out``; returns the trained learner (eval mode).

    ``config`` overrides fields of the learner's config (epochs, latent_dim, gamma, ...).
    ``max_steps`` stops early (tests). ``out=None`` saves under the user's cache
    (see ``run_dir_for``); ``out=False`` does not save.
    """
    device = resolve_device(device)
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    torch.manual_seed(seed)
    model = create_learner(learner, shape=ds.shape, **config).to(device)
    images = ds.train.images.to(device)  # uint8 on the device; batches are converted on the fly
    t0 = time.perf_counter()
    if callable(getattr(model, "fit", None)):  # closed-form learners (e.g. a PCA plugin) fit in one go
        model.fit(images.float().div_(255.0), seed=seed)  # (N, C, H, W) float32 in [0, 1], as encode sees
        history, step = [], 0
    else:
        history, step = _gradient_training(model, images, seed, callback, max_steps, learner)
    model.eval()
    info = {
        "source": learner_source(learner),
        "code": learner_code(learner),
        "dataset": ds.name,
        "seed": seed,
        "device": str(device),
        "steps": step,
        "train_seconds": round(time.perf_counter() - t0, 3),
        "history": history,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    model.run_info = info
    if out is not False:
        out = Path(out) if out is not None else run_dir_for(learner, ds.name, dataclasses.asdict(model.config), seed)
        save_checkpoint(model, out, info)
        model.run_info = {**info, "path": str(out)}
    return model


def _gradient_training(model, images, seed, callback, max_steps, learner):
    """Adam on the learner's loss, in shuffled minibatches; returns (per-epoch history, steps)."""
    c = model.config
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    steps_per_epoch = (n + c.batch_size - 1) // c.batch_size
    history: list[dict[str, float]] = []
    step = 0
    model.train()
    for epoch in range(c.epochs):
        sums: dict[str, float] = {}
        perm = torch.randperm(n, generator=gen).to(images.device)
        for i in range(steps_per_epoch):
            x = images[perm[i * c.batch_size:(i + 1) * c.batch_size]].float().div_(255.0)
            parts = model.loss(x)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            vals = {k: v.item() for k, v in parts.items()}
            if not all(map(math.isfinite, vals.values())):
                raise FloatingPointError(f"non-finite loss at epoch {epoch} step {i}: {vals}")
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v * x.shape[0]
            if callback:
                callback(epoch, i, steps_per_epoch, vals)
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        seen = min(n, (i + 1) * c.batch_size)
        history.append({"epoch": epoch + 1, **{k: v / seen for k, v in sums.items()}})
        log.info("%s epoch %d: %s", learner, epoch + 1, history[-1])
        if max_steps is not None and step >= max_steps:
            break
    return history, step
