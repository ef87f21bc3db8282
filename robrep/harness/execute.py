"""Running a benchmark: freeze encoders, probe every task, attack probe∘encoder, record rows.

``bench()`` (``robrep.bench``) is the Python API behind ``robrep bench``. Each cell (learner run, data set,
task, suite, attack) is a pure function of (encoder, probe, test indices, attack settings,
seed): see ``run_cell``. Finished cells are written to ``<out>/results.csv`` at once and
skipped when the run is resumed.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from robrep.attacks import Attack
from robrep.checkpoint import sha256_bytes
from robrep.checks import check_result
from robrep.data import Dataset, load_dataset
from robrep.encoders import ContractError, EncoderSource, LearnerError, check_encoder, obtain, resolve
from robrep.encoders.resolve import planned_run
from robrep.harness.config import BenchConfig, check_out
from robrep.harness.plan import Job, make_jobs, probe_indices
from robrep.plots import attack_grid, plot_robustness
from robrep.probes import ProbedEncoder, features, load_probe, save_probe, train_probe
from robrep.registry import UnknownNameError
from robrep.harness.store import ResultsStore
from robrep.results import (
    attack_cell, cell_key, cell_keys, cell_rows, done_cells, encoder_row, is_finished, load_masks, masks_path,
    result_rows, row_key, save_masks, stored_as, worst_case_rows,
)
from robrep.train import resolve_device
from robrep.validate import ConfigError

log = logging.getLogger(__name__)


class BenchProgress:
    """Hooks the CLI fills with progress bars; the library default does nothing."""

    def cells(self, total: int) -> None: ...
    def phase(self, description: str, total: int | None) -> None: ...
    def advance(self, n: int = 1, info: str = "") -> None: ...
    def cell_done(self) -> None: ...


def run_cell(model: ProbedEncoder, x: torch.Tensor, y: torch.Tensor, attack: Attack, radii, seed: int,
             progress=None) -> tuple[list[dict], torch.Tensor]:
    """Attack ``model`` on (x, y) at every radius and check the result: the pure unit of work.

    Returns one partial row per radius (attack results and checks, no provenance) and the
    per-example robust masks, (n_radii, N) bool in the order of ``sorted(radii)``.
    """
    res = attack.run(model, x, y, list(radii), seed=seed, progress=progress)
    checks = check_result(model, x, y, res, attack.norm)
    return result_rows(res, checks), torch.stack([res.robust[r] for r in res.radii]).cpu()


def saved_probe(path: Path, df: pd.DataFrame, base: dict) -> tuple[torch.nn.Linear, str] | None:
    """The probe a finished cell of the same encoder, data set, task, label fraction and seed was attacked with,
    if its file is still there with the SHA-256 its rows record: a resume attacks the same probe, whatever
    the thread count does to a re-fitted one's float rounding."""
    if df.empty or not path.is_file():
        return None
    same = df[(df["encoder_sha256"] == base["encoder_sha256"]) & (df["dataset"] == base["dataset"])
              & (df["task"] == base["task"]) & (df["label_fraction"] == base["label_fraction"])
              & (df["seed"] == base["seed"])]
    data = path.read_bytes()
    sha = sha256_bytes(data)
    return (load_probe(data), sha) if sha in set(same["probe_sha256"]) else None


@contextmanager
def _stage(src: EncoderSource, dataset: str, what: str):
    """Any exception on a learner's path becomes a LearnerError that names the learner and what it was doing."""
    try:
        yield
    except LearnerError:
        raise
    except Exception as e:
        raise LearnerError(src.label, f"failed {what} on {dataset}: {type(e).__name__}: {e}", src.source, what) from e


@dataclass
class _Run:
    """What every learner of one bench shares: its settings, the results so far, and where they go."""

    cfg: BenchConfig
    device: torch.device
    out: Path
    progress: BenchProgress
    store: ResultsStore
    df: pd.DataFrame  # the store's rows when the run started, then as last exported
    done: dict
    keys: set = field(default_factory=set)  # row keys of this run's protocol (finished now or before)
    cells_done: int = 0  # of the learner in progress (to settle the progress bar when it fails)

    def record(self, rows: pd.DataFrame) -> None:
        """Store ``rows`` (validated, upserted; other writers' rows are kept) and export results.csv."""
        self.store.add(rows)
        self.df = self.store.export()
        self.keep(rows)

    def keep(self, rows: pd.DataFrame) -> None:
        """``rows`` belong to this run's protocol: they are what ``bench`` returns."""
        self.keys.update(row_key(r) for r in rows.to_dict("records"))

    def cell_done(self) -> None:
        self.cells_done += 1
        self.progress.cell_done()


def bench(config: BenchConfig | None = None, progress: BenchProgress | None = None, *, strict: bool = True,
          **overrides) -> pd.DataFrame:
    """Run a benchmark; returns its rows (this run's protocol, computed now or found finished in ``out``) as a
    DataFrame. ``<out>/results.sqlite`` (exported to ``<out>/results.csv``) holds every run's rows.

    Learners are resolved before any work (``robrep.encoders.resolve``). With ``strict`` (the
    default), an unknown name, a learner of the wrong type, or a learner that fails anywhere on
    its path (building, training, loading, encoding any batch, non-finite features, probing,
    attacking) raises ``UnknownNameError`` or ``robrep.LearnerError`` naming it; the rows of cells
    finished before stay in results.csv. With ``strict=False`` such a learner is logged and
    skipped, the rest of the run completes, and ``df.attrs["skipped"]`` lists each skip as a dict
    (learner, dataset, error).
    """
    cfg = dataclasses.replace(config, **overrides) if config else BenchConfig(**overrides)
    out = Path(cfg.out)
    check_out(out)
    skipped: list[dict] = []

    def skip(label: str, dataset: str, error: Exception) -> None:
        if strict:
            raise error
        log.error("learner %s skipped%s: %s", label, f" on {dataset}" if dataset else "", error)
        skipped.append({"learner": label, "dataset": dataset, "error": str(error)})

    sources: list[EncoderSource] = []
    for spec in cfg.learners:
        try:
            sources.append(resolve(spec, cfg.learner_config, cfg.preprocessing))
        except (UnknownNameError, LearnerError) as e:
            skip(getattr(e, "label", None) or str(spec), "", e)
    if cfg.preprocessing is not None:
        for src in sources:
            if src.kind != "module":
                log.warning("preprocessing %r does not apply to %s: robrep learners take inputs in [0, 1]",
                            cfg.preprocessing, src.label)
    device = resolve_device(cfg.device)
    datasets = [load_dataset(name, root=cfg.data_root, download=cfg.download) for name in cfg.datasets]
    for ds in datasets:
        _check_collisions(sources, ds, cfg)
    jobs = make_jobs(cfg, sources, datasets)
    store = ResultsStore(out)
    try:
        df = store.frame()
        run = _Run(cfg, device, out, progress or BenchProgress(), store, df, done_cells(df))
        run.progress.cells(sum(job.n_cells for job in jobs))
        for job in jobs:  # the plan, in order: later issues may hand its jobs and cells to other processes
            run.cells_done = 0
            try:
                _run_job(run, job)
            except LearnerError as e:
                skip(job.src.label, job.ds.name, e)
                for _ in range(job.n_cells - run.cells_done):
                    run.progress.cell_done()
        everything = store.export()
    finally:
        store.close()
    df = everything[[row_key(r) in run.keys for r in everything.to_dict("records")]].reset_index(drop=True)
    df.attrs["invalid"] = everything.attrs.get("invalid", [])
    if not df.empty:
        shown = "worst-case" if (df["suite"] == "worst-case").any() else None
        plot_robustness(df, out / "robustness.png", suite=shown)
    df.attrs["skipped"] = skipped  # learners reported and skipped, with their errors
    return df


def _check_collisions(sources: list[EncoderSource], ds: Dataset, cfg: BenchConfig) -> None:
    """Two labels of robrep learners whose configs resolve to the same run would silently share one set of
    rows: refuse them before anything is trained."""
    seen: dict[Path, str] = {}
    for src in sources:
        if src.kind != "learner":
            continue
        try:
            _, _, run_dir = planned_run(src, ds, seed=cfg.seed, arch=cfg.arch, epochs=cfg.epochs)
        except Exception:  # noqa: BLE001  a config the learner refuses is reported when it is obtained
            continue
        if run_dir in seen:
            raise ConfigError(f"learners {seen[run_dir]!r} and {src.label!r} are the same run on {ds.name} "
                              f"({run_dir.name}): their configs resolve to the same thing, so their rows would be "
                              "one; give them different configs or drop one")
        seen[run_dir] = src.label


def _run_job(run: _Run, job: Job) -> None:
    """Every cell of one learner on one data set: obtain it, probe each task, attack, record."""
    cfg, device, out = run.cfg, run.device, run.out
    src, ds, idx = job.src, job.ds, job.idx
    with _stage(src, ds.name, "while being built, trained or loaded"):
        got = obtain(src, ds, seed=cfg.seed, device=device, arch=cfg.arch, epochs=cfg.epochs, retrain=cfg.retrain,
                     progress=run.progress)
    with _stage(src, ds.name, "the contract check on 8 training images"):
        check_encoder(got.encoder, ds.train.batch(slice(0, 8)).to(device))
    with _stage(src, ds.name, "while encoding the training split"):
        train_feats = features(got.encoder, ds.train.images, device=device)
    x_test = ds.test.batch(idx).to(device)
    for task, attacks in job.tasks:
        y_train = ds.train.labels[task.name].to(device)
        seen = probe_indices(y_train.cpu(), cfg.label_fraction, cfg.seed).to(device)
        suffix = "" if cfg.label_fraction == 1 else f"-labels{cfg.label_fraction:g}"
        probe_path = out / "probes" / got.run / f"{ds.name}-{task.name}{suffix}.safetensors"
        asked = {"encoder_sha256": got.sha256, "dataset": ds.name, "task": task.name,
                 "label_fraction": cfg.label_fraction, "seed": cfg.seed}
        reused = saved_probe(probe_path, run.df, asked)
        if reused is not None:
            probe, probe_sha = reused
            probe = probe.to(device)
        else:
            with _stage(src, ds.name, f"while fitting the probe for task {task.name}"):
                probe = train_probe(train_feats[seen], y_train[seen], task.n_classes)
                if not all(torch.isfinite(p).all() for p in probe.parameters()):
                    raise ContractError("the probe's weights are not finite (features too large or degenerate)")
            probe_sha = save_probe(probe, probe_path)
        model = ProbedEncoder(got.encoder, probe)
        y = ds.test.labels[task.name][idx].to(device)
        if cfg.images is not None:
            spread = torch.linspace(0, len(idx) - 1, 8).long().to(device)  # across classes, not the first 8
            with _stage(src, ds.name, f"while drawing the image grid for task {task.name}"):
                attack_grid(model, x_test[spread], y[spread], cfg.images, cfg.steps,
                            out / "images" / f"{got.run}-{ds.name}-{task.name}-r{cfg.images:g}.png",
                            title=f"{src.label} on {ds.name} / {task.name}: PGD at radius {cfg.images:g}")
        base = encoder_row(
            learner=got.learner, label=src.label, run=got.run, checkpoint=got.checkpoint, source=got.source,
            learner_config=got.config, arch=got.arch, dataset=ds.name, task=task.name, n_classes=task.n_classes,
            n_examples=len(idx), label_fraction=cfg.label_fraction, n_probe_labels=len(seen), seed=cfg.seed,
            encoder_sha256=got.sha256, probe_sha256=probe_sha, device=str(device),
            probe_train_accuracy=(probe(train_feats[seen]).argmax(1) == y_train[seen]).float().mean().item(),
        )
        cells = []  # (attack, rows, masks) for the worst case
        radii = set(float(r) for r in cfg.radii)
        for attack in attacks:
            cell = attack_cell(base, attack)
            mask_path = masks_path(out, cell, cfg.radii)
            if is_finished(run.done, cell, out, cfg.radii):
                log.info("skipping finished cell %s / %s / %s / %s", got.run, ds.name, task.name, attack)
                key, df = cell_key({**cell, "radius": None}), run.df
                mine = pd.Series([k == key for k in cell_keys(df)], index=df.index)
                old = df[mine & df["radius"].astype(float).isin(radii)]
                run.keep(old)
                cells.append((attack, old, load_masks(mask_path)))
                run.cell_done()
                continue
            run.progress.phase(f"{attack.suite}/{attack.name}: {src.label} / {ds.name} / {task.name}",
                               attack.units(cfg.radii))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            with _stage(src, ds.name, f"under attack {attack.suite}/{attack.name} (task {task.name})"):
                partial, masks = run_cell(model, x_test, y, attack, cfg.radii, cfg.seed, run.progress.advance)
            rows = cell_rows(cell, partial, stamp)
            cells.append((attack, rows, masks))
            save_masks(mask_path, cfg.radii, masks, idx)
            run.record(rows)
            run.cell_done()
        if len(cells) > 1:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            worst = worst_case_rows({**base, "timestamp": stamp}, cells, cfg.radii)
            for w in worst:
                if w["warnings"]:
                    log.warning("%s / %s / radius %g: %s", got.run, task.name, w["radius"], w["warnings"])
            stored = stored_as(run.df, worst)
            if stored is not None:  # a resume that computed nothing new: the stored rows stand, timestamps too
                run.keep(stored)
            else:
                run.record(pd.DataFrame(worst))


__all__ = ["BenchProgress", "bench", "run_cell", "saved_probe"]
