"""The plan of a benchmark: its jobs and cells, and (without running it) what is done and what would run.

``make_jobs`` is the plan ``bench`` executes: one job per (learner, data set), holding the
attacked test points and, per task, its attack cells in order; a job's learner is obtained
once, a probe is fitted per task, then each cell runs (or is found finished) and the worst
case is recorded. ``plan(cfg)`` (``robrep bench --dry-run``) resolves the learners, loads the
data sets, and for every cell of those jobs says whether it is finished in ``cfg.out`` (every
radius has a row in the store and its mask file is there) or would run. It trains nothing:
an encoder's identity is known for a cached or given checkpoint and for a module robrep builds
as it is (built here to hash its weights); a learner that would be trained has no cells done.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from robrep.attacks import Attack, suite_attacks
from robrep.attacks.cascade import cascade, is_chained
from robrep.checkpoint import CheckpointError, read_config
from robrep.data import Dataset, Task
from robrep.encoders import EncoderSource, build
from robrep.encoders.resolve import cached_meta, foreign_run, planned_run
from robrep.harness.config import BenchConfig
from robrep.harness.preflight import preflight
from robrep.harness.store import ResultsStore, posted_rows
from robrep.harness.cells import task_cells
from robrep.rows.files import read_results
from robrep.rows.masks import done_cells, is_finished

COLUMNS = ("label", "dataset", "learner_status", "run", "task", "suite", "attack", "status")


def test_indices(n_test: int, n_examples: int | None, seed: int) -> torch.Tensor:
    """The attacked test points: all of them, or a fixed random subset (sorted) chosen by ``seed``."""
    if n_examples is None or n_examples >= n_test:
        return torch.arange(n_test)
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))[:n_examples].sort().values


def claim_points(ds, row, device="cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(idx, x, y): the test points a published row is about (its run's selection, ``n_examples`` and ``seed``),
    their inputs and their labels of the row's task, on ``device``: what ``robrep verify``, ``robrep certify``
    and the benchmarks that re-examine a row attack or bound."""
    idx = test_indices(len(ds.test), int(row["n_examples"]), int(row["seed"]))
    return idx, ds.test.batch(idx).to(device), ds.test.labels[row["task"]][idx].to(device)


def probe_indices(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Training points whose labels the probe sees: all, or a stratified random ``fraction`` (>= 1 per class)."""
    if fraction >= 1:
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in labels.unique():
        members = (labels == c).nonzero().squeeze(1)
        n = max(1, round(fraction * len(members)))
        keep.append(members[torch.randperm(len(members), generator=gen)[:n]])
    return torch.cat(keep).sort().values


@dataclass
class Job:
    """One learner on one data set: obtained once, probed per task, attacked by each task's cells."""

    src: EncoderSource
    ds: Dataset
    idx: torch.Tensor  # the attacked test points
    tasks: list[tuple[Task, list[Attack]]]  # per task, its attack cells in order
    cascade: bool = False  # the task's attacks run as a cascade (each on the points earlier ones left robust)

    def cells(self, t: int, base: dict) -> list[dict]:
        """The cells of task ``t`` (``robrep.rows.task_cells``) on top of ``base``."""
        return task_cells(base, self.tasks[t][1], self.cascade)

    def is_cascade(self, t: int) -> bool:
        return is_chained(self.cascade, self.tasks[t][1])

    @property
    def n_cells(self) -> int:
        return sum(len(attacks) for _, attacks in self.tasks)


def make_jobs(cfg: BenchConfig, sources: list[EncoderSource], datasets: list[Dataset]) -> list[Job]:
    """The plan: per data set, per learner, the tasks and their attacks (``cfg.suites`` for the task's classes)."""
    jobs = []
    for ds in datasets:
        tasks = [ds.task(t) for t in cfg.tasks] if cfg.tasks else list(ds.tasks)
        chained = cfg.worst_case == "cascade"
        cells = []
        for task in tasks:
            attacks = suite_attacks(cfg.suites, task.n_classes, steps=cfg.steps, restarts=cfg.restarts, norm=cfg.norm,
                                    loss=cfg.loss)
            cells.append((task, cascade(attacks) if chained and len(attacks) > 1 else attacks))
        idx = test_indices(len(ds.test), cfg.n_examples, cfg.seed)
        jobs += [Job(src, ds, idx, cells, chained) for src in sources]
    return jobs


def identity(src: EncoderSource, ds, cfg: BenchConfig) -> tuple[str, str | None, str]:
    """(what happens to the learner, its encoder SHA-256 if known without training, its run name)."""
    if src.kind == "checkpoint":
        meta = read_config(src.path)
        return "load checkpoint", meta["sha256"], Path(src.path).name
    if src.kind == "module":
        sha = build(src, ds.shape, cfg.seed).sha256()
        return "build (never trained)", sha, foreign_run(src.label, ds.name, sha)
    _, config, run_dir = planned_run(src, ds, seed=cfg.seed, arch=cfg.arch, epochs=cfg.epochs)
    try:
        meta = None if cfg.retrain else cached_meta(run_dir, config)
    except CheckpointError:
        meta = None  # a damaged cached checkpoint is trained again
    if meta is not None:
        return "cached checkpoint", meta["sha256"], run_dir.name
    return "train", None, run_dir.name


def needs_training(src: EncoderSource, ds, cfg: BenchConfig) -> bool:
    """Whether obtaining ``src`` on ``ds`` trains it (a robrep learner with no usable cached checkpoint)."""
    if src.kind != "learner":
        return False
    try:
        return identity(src, ds, cfg)[0] == "train"
    except Exception:  # noqa: BLE001  a config the learner refuses: obtaining it reports the error
        return True


def plan(cfg: BenchConfig, *, force: bool = False) -> pd.DataFrame:
    """One row per cell: learner label, data set, what happens to the learner, run, task, suite, attack, and
    ``done`` or ``to run``; learners that cannot be resolved or built get one row with the error. Checks what
    ``bench`` checks first (``robrep.harness.preflight``), so a bench it shows would not be refused."""
    checked = preflight(cfg, folder="bench", force=force)
    rows: list[dict] = [{"label": label, "learner_status": f"error: {e}", "status": "skipped"}
                        for label, e in checked.skipped]
    sources = checked.sources
    out = Path(cfg.out)
    if (out / "results.sqlite").is_file():
        store = ResultsStore(out)
        stored = store.frame()
        store.close()
    else:  # a folder from before the store: read its CSV, change nothing
        stored = read_results(out / "results.csv")
    done = done_cells(stored)
    for key, radii in done_cells(posted_rows(out)).items():  # cells a killed run posted: the next run collects them
        done.setdefault(key, set()).update(radii)
    for job in make_jobs(cfg, sources, checked.datasets):
        src, ds = job.src, job.ds
        try:
            status, sha, run = identity(src, ds, cfg)
        except Exception as e:  # noqa: BLE001  reported in the plan, as the bench would skip it
            rows.append({"label": src.label, "dataset": ds.name, "learner_status": f"error: {e}", "status": "skipped"})
            continue
        for t, (task, attacks) in enumerate(job.tasks):
            base = {"encoder_sha256": sha, "run": run, "dataset": ds.name, "task": task.name,
                    "n_examples": len(job.idx), "seed": cfg.seed, "label_fraction": cfg.label_fraction}
            for attack, cell in zip(attacks, job.cells(t, base)):
                finished = sha is not None and is_finished(done, cell, out, cfg.radii)
                rows.append({"label": src.label, "dataset": ds.name, "learner_status": status, "run": run,
                             "task": task.name, "suite": attack.suite, "attack": attack.name,
                             "status": "done" if finished else "to run"})
    return pd.DataFrame(rows, columns=list(COLUMNS))
