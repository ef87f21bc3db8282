"""The plan of a benchmark, without running it: what would be trained, what is done, what would run.

``plan(cfg)`` (``robrep bench --dry-run``) resolves the learners, loads the data sets, and for
every (learner, data set, task, attack) cell says whether it is finished in ``cfg.out`` (every
radius has a row in the store and its mask file is there) or would run. It trains nothing:
an encoder's identity is known for a cached or given checkpoint and for a module robrep builds
as it is (built here to hash its weights); a learner that would be trained has no cells done.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from robrep.attacks import suite_attacks
from robrep.checkpoint import CheckpointError, read_config, sha256_bytes, state_bytes
from robrep.data import load_dataset
from robrep.encoders import EncoderSource, LearnerError, build, resolve
from robrep.encoders.resolve import cached_meta, foreign_run, planned_run
from robrep.harness.config import BenchConfig
from robrep.harness.execute import test_indices
from robrep.harness.store import ResultsStore
from robrep.registry import UnknownNameError
from robrep.results import attack_cell, done_cells, is_finished, read_results

COLUMNS = ("label", "dataset", "learner_status", "run", "task", "suite", "attack", "status")


def _identity(src: EncoderSource, ds, cfg: BenchConfig) -> tuple[str, str | None, str]:
    """(what happens to the learner, its encoder SHA-256 if known without training, its run name)."""
    if src.kind == "checkpoint":
        meta = read_config(src.path)
        return "load checkpoint", meta["sha256"], Path(src.path).name
    if src.kind == "module":
        sha = sha256_bytes(state_bytes(build(src, ds.shape, cfg.seed).weights()))
        return "build (never trained)", sha, foreign_run(src.label, ds.name, sha)
    _, config, run_dir = planned_run(src, ds, seed=cfg.seed, arch=cfg.arch, epochs=cfg.epochs)
    try:
        meta = None if cfg.retrain else cached_meta(run_dir, config)
    except CheckpointError:
        meta = None  # a damaged cached checkpoint is trained again
    if meta is not None:
        return "cached checkpoint", meta["sha256"], run_dir.name
    return "train", None, run_dir.name


def plan(cfg: BenchConfig) -> pd.DataFrame:
    """One row per cell: learner label, data set, what happens to the learner, run, task, suite, attack, and
    ``done`` or ``to run``; learners that cannot be resolved or built get one row with the error."""
    rows: list[dict] = []
    sources = []
    for spec in cfg.learners:
        try:
            sources.append(resolve(spec, cfg.learner_config, cfg.preprocessing))
        except (UnknownNameError, LearnerError) as e:
            rows.append({"label": str(spec), "learner_status": f"error: {e}", "status": "skipped"})
    out = Path(cfg.out)
    if (out / "results.sqlite").is_file():
        store = ResultsStore(out)
        done = done_cells(store.frame())
        store.close()
    else:  # a folder from before the store: read its CSV, change nothing
        done = done_cells(read_results(out / "results.csv"))
    for name in cfg.datasets:
        ds = load_dataset(name, root=cfg.data_root, download=cfg.download)
        tasks = [ds.task(t) for t in cfg.tasks] if cfg.tasks else list(ds.tasks)
        n = len(test_indices(len(ds.test), cfg.n_examples, cfg.seed))
        for src in sources:
            try:
                status, sha, run = _identity(src, ds, cfg)
            except Exception as e:  # noqa: BLE001  reported in the plan, as the bench would skip it
                rows.append({"label": src.label, "dataset": ds.name, "learner_status": f"error: {e}",
                             "status": "skipped"})
                continue
            for task in tasks:
                base = {"encoder_sha256": sha, "run": run, "dataset": ds.name, "task": task.name, "n_examples": n,
                        "seed": cfg.seed, "label_fraction": cfg.label_fraction}
                for attack in suite_attacks(cfg.suites, task.n_classes, steps=cfg.steps, restarts=cfg.restarts,
                                            norm=cfg.norm):
                    cell = attack_cell(base, attack)
                    finished = sha is not None and is_finished(done, cell, out, cfg.radii)
                    rows.append({"label": src.label, "dataset": ds.name, "learner_status": status, "run": run,
                                 "task": task.name, "suite": attack.suite, "attack": attack.name,
                                 "status": "done" if finished else "to run"})
    return pd.DataFrame(rows, columns=list(COLUMNS))
