"""Unsupervised training of a registered learner on a data set's training split."""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Callable

import torch

from robrep.checkpoint import save_checkpoint
from robrep.io import short_hash
from robrep.data import Dataset, cache_dir, load_dataset
from robrep.learners import check_overrides, config_record, create_learner, learner_code, learner_source
from robrep.progress import Progress, epoch_line, log_progress
from robrep.provenance import machine
from robrep.rng import kept_random_state
from robrep.validate import ConfigError

log = logging.getLogger(__name__)

# callback(epoch, step, steps_per_epoch, parts) after every optimiser step; parts are floats
Callback = Callable[[int, int, int, dict[str, float]], None]
# on_epoch(epoch counted from 1, epochs, the epoch's mean loss parts, seconds)
EpochCallback = Callable[[int, int, dict[str, float], float], None]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device that exists here; a ConfigError says what was expected."""
    try:
        device = torch.device(device or "cpu")
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was asked for, but torch sees no CUDA device here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device} was asked for, but torch sees {torch.cuda.device_count()} CUDA "
                          f"device(s) here (cuda:0 to cuda:{torch.cuda.device_count() - 1})")
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
    world=None,
    progress=False,
    on_epoch: EpochCallback | None = None,
    force: bool = False,
    label: str | None = None,
    **config,
):
    """Train learner ``learner`` on ``dataset`` and save it to ``out``; returns the trained learner (eval mode).

    ``config`` overrides fields of the learner's config (epochs, latent_dim, gamma, ...).
    ``max_steps`` stops early (tests). ``callback`` is called after every step with the step's loss parts,
    ``on_epoch`` after every epoch with its mean loss parts (as the history records them) and seconds.
    ``progress`` (``robrep.progress``): False is quiet; True logs a line per epoch at INFO on the ``robrep``
    logger (call ``robrep.progress.show_progress()`` or configure logging to see it); a ``Progress`` is told
    the training as one phase of ``epochs x steps`` steps (named ``train <label> on <data set>``; ``label``
    defaults to the learner's name), each step and each epoch. ``out=None`` saves under the user's cache (see ``run_dir_for``); ``out=False``
    does not save. A folder ``out`` is checked before training (``robrep.folders``): one holding a checkpoint of
    another run (learner, config, data set, seed) or files robrep did not write is refused with a ConfigError
    (``force=True`` writes beside such files, never over a checkpoint).

    ``world`` (a ``robrep.distributed.World`` of several ranks, e.g. ``torchrun ... -m robrep train``)
    trains with DistributedDataParallel: every rank takes its share of each minibatch and
    gradients are averaged, so a step uses the same minibatch as one process would; rank 0 saves.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    hooks = _Hooks(log_progress(log) if progress is True else Progress.of(progress or None), callback, on_epoch,
                   label or learner)
    world = world or _one_process()
    world.begin()
    device = world.device(resolve_device(device))
    with kept_random_state(device):
        return _train(learner, dataset, seed, device, out, hooks, max_steps, world, force, config)


@dataclasses.dataclass
class _Hooks:
    """Who hears about the training as it goes: the progress protocol, and the public per-step and per-epoch
    callbacks of ``train``."""
    progress: Progress
    callback: Callback | None
    on_epoch: EpochCallback | None
    label: str

    def step(self, epoch: int, epochs: int, i: int, steps_per_epoch: int, parts: dict[str, float]) -> None:
        if self.callback:
            self.callback(epoch, i, steps_per_epoch, parts)
        self.progress.advance(1, f"epoch {epoch + 1}/{epochs}  " + "  ".join(f"{k} {v:.2f}" for k, v in parts.items()))

    def epoch(self, what: str, epoch: int, epochs: int, means: dict[str, float], seconds: float) -> None:
        line = epoch_line(what, epoch, epochs, means, seconds)
        log.debug("%s", line)
        self.progress.epoch_done(line)
        if self.on_epoch is not None:
            self.on_epoch(epoch, epochs, means, seconds)


def _train(learner, dataset, seed, device, out, hooks, max_steps, world, force, config):
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    torch.manual_seed(seed)
    model = create_learner(learner, shape=ds.shape, **check_overrides(learner, config)).to(device)
    if out not in (None, False) and world.is_writer:
        _check_destination(Path(out), learner, ds.name, config_record(model.config), seed, force)
    images = ds.train.images.to(device)  # uint8 on the device; batches are converted on the fly
    if callable(getattr(model, "prepare", None)):  # learners told the training split first (labels, its size)
        model.prepare(images, dict(ds.train.labels))
    t0 = time.perf_counter()
    if callable(getattr(model, "fit", None)):  # closed-form learners (e.g. a PCA plugin) fit in one go
        model.fit(images.float().div_(255.0), seed=seed)  # (N, C, H, W) float32 in [0, 1], as encode sees
        history, step = [], 0
    else:
        what = f"train {hooks.label} on {ds.name}"
        history, step = _gradient_training(model, images, seed, hooks, max_steps, what, world)
    model.eval()
    info = {
        "source": learner_source(learner),
        "code": learner_code(learner),
        "dataset": ds.name,
        "seed": seed,
        "device": str(device),
        # what trained it: float32 training repeats bit for bit only on the same CPU kind with the same threads
        "machine": machine(str(device)),
        "threads": torch.get_num_threads(),
        "processes": world.size,
        "steps": step,
        "train_seconds": round(time.perf_counter() - t0, 3),
        "history": history,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    model.run_info = info
    if out is not False:
        out = Path(out) if out is not None else run_dir_for(learner, ds.name, config_record(model.config), seed)
        if world.is_writer:
            save_checkpoint(model, out, info)
        model.run_info = {**info, "path": str(out)}
    world.barrier(f"trained {learner}")  # every rank returns once the checkpoint is written
    return model


def _check_destination(out: Path, learner: str, dataset: str, config: dict, seed: int, force: bool) -> None:
    """``out`` may take this run's checkpoint: a folder robrep may write (``robrep.folders``) that holds no
    checkpoint, or one of this very run (trained again: replaced)."""
    import json

    from robrep.checkpoint import CONFIG, read_config
    from robrep.folders import FolderError, check_folder

    check_folder(out, "checkpoint", force=force)
    if not (out / CONFIG).is_file():
        return
    meta = read_config(out)
    theirs = (meta["learner"], meta["config"], meta.get("dataset"), meta.get("seed"))
    if theirs != (learner, json.loads(json.dumps(config)), dataset, seed):
        raise FolderError(f"--out {out} holds the checkpoint of another run ({meta['learner']} on "
                          f"{meta.get('dataset')}, seed {meta.get('seed')}, config {short_hash(meta['config'])}); "
                          f"robrep never overwrites it: choose another folder for {learner} on {dataset}, seed {seed}")


def _one_process():
    from robrep.distributed import World

    return World()


class _Loss(torch.nn.Module):
    """The learner's loss as ``forward``, so DistributedDataParallel sees the call it synchronises on."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, index=None):
        return self.model.loss(x) if index is None else self.model.loss(x, index=index)


def _gradient_training(model, images, seed, hooks, max_steps, what, world):
    """Adam on the learner's loss, in shuffled minibatches; returns (per-epoch history, steps).

    On several ranks each minibatch (the same one a single process draws) is split in contiguous shares;
    each rank's mean loss is weighted by its share, so the averaged gradient is the minibatch's mean
    gradient, and the logged losses are the minibatch means. Each rank draws its own noise (rank 0 the
    single process's stream)."""
    c = model.config
    step_fn = model.loss
    wants_index = getattr(model, "wants_index", False)  # learners that keep per-example state (learners.fast)
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(_Loss(model), device_ids=[images.device.index] if images.device.type == "cuda" else None)
        step_fn = ddp
        if world.rank:
            torch.manual_seed(seed * 1_000_003 + world.rank)
    opt = torch.optim.Adam(model.parameters(), lr=c.lr)
    gen = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    steps_per_epoch = (n + c.batch_size - 1) // c.batch_size
    history: list[dict[str, float]] = []
    step = 0
    total = c.epochs * steps_per_epoch
    hooks.progress.phase(what, total if max_steps is None else min(max_steps, total))
    model.train()
    for epoch in range(c.epochs):
        sums: dict[str, float] = {}
        t_epoch = time.perf_counter()
        perm = torch.randperm(n, generator=gen).to(images.device)
        for i in range(steps_per_epoch):
            batch = perm[i * c.batch_size:(i + 1) * c.batch_size]
            vals = _step(step_fn, opt, images, batch, world, wants_index)
            if not all(map(math.isfinite, vals.values())):
                raise FloatingPointError(f"non-finite loss at epoch {epoch} step {i}: {vals}")
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v * len(batch)
            hooks.step(epoch, c.epochs, i, steps_per_epoch, vals)
            step += 1
            if max_steps is not None and step >= max_steps:
                break
        seen = min(n, (i + 1) * c.batch_size)
        means, seconds = {k: v / seen for k, v in sums.items()}, time.perf_counter() - t_epoch
        history.append({"epoch": epoch + 1, **means})
        hooks.epoch(what, epoch + 1, c.epochs, means, seconds)
        if max_steps is not None and step >= max_steps:
            break
    if world.distributed:
        _check_in_sync(model)
    return history, step


def _step(step_fn, opt, images, batch, world, wants_index: bool) -> dict[str, float]:
    """One Adam step on minibatch ``batch`` (indices into ``images``); on several ranks, on this rank's share.
    Returns the minibatch's mean loss parts."""
    share = torch.tensor_split(batch, world.size)[world.rank] if world.distributed else batch
    rows = share if len(share) else batch[:1]  # an empty share counts 0
    x = images[rows].float().div_(255.0)
    parts = step_fn(x, index=rows) if wants_index else step_fn(x)
    opt.zero_grad(set_to_none=True)
    if world.distributed:
        weight = len(share) * world.size / len(batch)  # DDP averages over ranks
        (parts["loss"] * weight).backward()
        parts = _minibatch_means(parts, len(share) / len(batch))
    else:
        parts["loss"].backward()
    opt.step()
    return {k: v.item() for k, v in parts.items()}


def _check_in_sync(model) -> None:
    """Every rank must end with the same weights (DDP keeps them so); refuse to save a model that does not."""
    import torch.distributed as dist

    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
    lo, hi = total.clone(), total.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if lo.item() != hi.item():
        raise RuntimeError(f"the ranks' weights differ after training (sums {lo.item()!r} to {hi.item()!r}): "
                           "gradients were not synchronised; the model is not saved")


def _minibatch_means(parts: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Every rank's share-weighted loss parts summed over ranks: the minibatch means, the same on every rank."""
    import torch.distributed as dist

    names = list(parts)
    stacked = torch.stack([parts[k].detach().float() for k in names]) * fraction
    dist.all_reduce(stacked)
    return dict(zip(names, stacked))
