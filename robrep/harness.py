"""The benchmark harness: freeze encoders, probe every task, attack probe∘encoder, record rows.

``bench()`` (``robrep.bench``) is the Python API behind ``robrep bench``. Each cell (learner run, data set,
task, suite, attack) is a pure function of (encoder, probe, test indices, attack settings,
seed): see ``run_cell``. Finished cells are written to ``<out>/results.csv`` at once and
skipped when the run is resumed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save as st_save

import robrep
from robrep.attacks import ATTACKS, Attack
from robrep.checkpoint import CheckpointError, atomic_write, load_checkpoint, read_config, sha256_bytes
from robrep.checks import CHECK_COLUMNS, check_result
from robrep.data import Dataset, DatasetError, cache_dir, load_dataset
from robrep.learners import create_learner
from robrep.plots import plot_robustness
from robrep.probes import ProbedEncoder, features, freeze, train_probe
from robrep.results import cell_key, done_cells, merge, read_results, write_results
from robrep.train import resolve_device, train

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

DEFAULT_LEARNERS = ("vae", "beta-vae", "se-random", "se-adversarial")


@dataclass
class BenchConfig:
    """A whole experiment. Every field can be set in a TOML file (``--config``) or on the command line."""

    learners: tuple[str, ...] = DEFAULT_LEARNERS  # registered names, or checkpoint folders
    learner_config: dict[str, dict] = field(default_factory=dict)  # per learner name: config overrides
    datasets: tuple[str, ...] = ("mnist5k",)
    tasks: tuple[str, ...] | None = None  # default: every task of each data set
    arch: str = "mlp"
    epochs: int | None = None  # default: each learner's config
    radii: tuple[float, ...] = (0.0, 0.05, 0.1, 0.15, 0.2)
    norm: str = "linf"  # the native PGD's norm: linf or l2
    steps: int = 100
    restarts: int = 10
    n_examples: int | None = 1000  # test points attacked (None: the whole test split)
    seed: int = 0
    device: str = "cpu"
    out: str = "robrep-bench"
    data_root: str | None = None
    retrain: bool = False  # ignore cached checkpoints

    def __post_init__(self) -> None:
        for name in ("learners", "datasets", "radii"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.tasks is not None:
            self.tasks = tuple(self.tasks)
        if not self.learners or not self.datasets or not self.radii:
            raise ValueError("a benchmark needs at least one learner, one data set and one radius")
        if self.n_examples is not None and self.n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {self.n_examples}")

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> "BenchConfig":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ValueError(f"cannot read benchmark config {path}: {e}") from e
        data = data.get("bench", data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        return cls(**{**data, **overrides})


class BenchProgress:
    """Hooks the CLI fills with progress bars; the library default does nothing."""

    def cells(self, total: int) -> None: ...
    def phase(self, description: str, total: int | None) -> None: ...
    def advance(self, n: int = 1, info: str = "") -> None: ...
    def cell_done(self) -> None: ...


def _short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:8]


def obtain_learner(spec: str, ds: Dataset, cfg: BenchConfig, progress: BenchProgress):
    """A frozen learner for ``spec`` (a registered name or a checkpoint folder), training it if needed."""
    if Path(spec).is_dir():
        learner = load_checkpoint(spec, map_location=cfg.device)
        if tuple(learner.config.shape) != ds.shape:
            raise ValueError(f"checkpoint {spec} expects inputs {learner.config.shape}, data set {ds.name} has {ds.shape}")
        return freeze(learner), Path(spec)
    overrides = {**cfg.learner_config.get(spec, {}), "arch": cfg.learner_config.get(spec, {}).get("arch", cfg.arch)}
    if cfg.epochs is not None:
        overrides["epochs"] = cfg.epochs
    config = create_learner(spec, shape=ds.shape, **overrides).config.to_dict()
    run_dir = cache_dir() / "runs" / f"{spec}-{ds.name}-{config['arch']}-s{cfg.seed}-{_short_hash(config)}"
    if not cfg.retrain:
        try:
            if read_config(run_dir)["config"] == json.loads(json.dumps(config)):
                log.info("reusing checkpoint %s", run_dir)
                return freeze(load_checkpoint(run_dir, map_location=cfg.device)), run_dir
        except CheckpointError:
            pass
    steps_total = config["epochs"] * -(-len(ds.train) // config["batch_size"])
    progress.phase(f"train {spec} on {ds.name}", steps_total)

    def on_step(epoch, step, steps_per_epoch, parts):
        progress.advance(1, f"epoch {epoch + 1}  " + "  ".join(f"{k} {v:.1f}" for k, v in parts.items()))

    learner = train(spec, ds, seed=cfg.seed, device=cfg.device, out=run_dir, callback=on_step, **overrides)
    return freeze(learner), run_dir


def test_indices(n_test: int, n_examples: int | None, seed: int) -> torch.Tensor:
    """The attacked test points: all of them, or a fixed random subset (sorted) chosen by ``seed``."""
    if n_examples is None or n_examples >= n_test:
        return torch.arange(n_test)
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))[:n_examples].sort().values


def run_cell(model: ProbedEncoder, x: torch.Tensor, y: torch.Tensor, attack: Attack, radii, seed: int,
             progress=None) -> list[dict]:
    """Attack ``model`` on (x, y) at every radius and check the result: the pure unit of work.

    Returns one partial row per radius (attack results and checks, no provenance).
    """
    res = attack.run(model, x, y, list(radii), seed=seed, progress=progress)
    checks = check_result(model, x, y, res, attack.norm)
    nominal = res.clean_correct.float().mean().item()
    rows = []
    for r in res.radii:
        c = checks[r]
        rows.append({
            "radius": r, "nominal_accuracy": nominal, "adversarial_accuracy": res.accuracy(r),
            "n_attacked": res.attacked[r], **c,
            "checks_passed": all(c[k] for k in CHECK_COLUMNS),
            "wall_seconds": res.wall_seconds,
        })
    return rows


def save_probe(probe: torch.nn.Linear, path: Path) -> str:
    data = st_save({k: v.detach().cpu().contiguous() for k, v in probe.state_dict().items()})
    atomic_write(path, data)
    return sha256_bytes(data)


def bench(config: BenchConfig | None = None, progress: BenchProgress | None = None, **overrides) -> pd.DataFrame:
    """Run a benchmark; returns every result row of ``<out>/results.csv`` as a DataFrame."""
    cfg = dataclasses.replace(config, **overrides) if config else BenchConfig(**overrides)
    progress = progress or BenchProgress()
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    results_csv = out / "results.csv"
    df = read_results(results_csv)
    done = done_cells(df)
    attack = ATTACKS.create(f"pgd-{cfg.norm}", steps=cfg.steps, restarts=cfg.restarts)
    datasets = [load_dataset(name, root=cfg.data_root) for name in cfg.datasets]
    plan = [(ds, [ds.task(t) for t in cfg.tasks] if cfg.tasks else list(ds.tasks)) for ds in datasets]
    progress.cells(sum(len(cfg.learners) * len(tasks) for _, tasks in plan))
    for ds, tasks in plan:
        idx = test_indices(len(ds.test), cfg.n_examples, cfg.seed)
        x_test = ds.test.batch(idx).to(device)
        for spec in cfg.learners:
            learner, run_dir = obtain_learner(spec, ds, cfg, progress)
            meta = read_config(run_dir)
            train_feats = features(learner, ds.train.images, device=device)
            for task in tasks:
                y_train = ds.train.labels[task.name].to(device)
                probe = train_probe(train_feats, y_train, task.n_classes)
                probe_sha = save_probe(probe, out / "probes" / run_dir.name / f"{ds.name}-{task.name}.safetensors")
                settings = attack.settings()
                base = {
                    "learner": meta["learner"], "run": run_dir.name, "checkpoint": str(run_dir.resolve()),
                    "learner_config": json.dumps(meta["config"], sort_keys=True), "arch": meta["config"].get("arch"),
                    "dataset": ds.name, "task": task.name, "n_classes": task.n_classes, "suite": attack.suite,
                    "attack": attack.name, "attack_config": json.dumps(settings, sort_keys=True),
                    "norm": attack.norm, "steps": settings.get("steps"), "restarts": settings.get("restarts"),
                    "step_size": f"{settings.get('rel_stepsize')} * radius / steps", "n_examples": len(idx),
                    "seed": cfg.seed, "encoder_sha256": meta["sha256"], "probe_sha256": probe_sha,
                    "probe_train_accuracy": (probe(train_feats).argmax(1) == y_train).float().mean().item(),
                    "robrep_version": robrep.__version__, "torch_version": torch.__version__, "device": str(device),
                }
                if cell_key({**base, "radius": None}) in done:
                    log.info("skipping finished cell %s / %s / %s", run_dir.name, ds.name, task.name)
                    progress.cell_done()
                    continue
                progress.phase(f"attack {spec} / {ds.name} / {task.name}", attack.units(cfg.radii))
                model = ProbedEncoder(learner, probe)
                y = ds.test.labels[task.name][idx].to(device)
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                rows = [{**base, **r, "timestamp": stamp}
                        for r in run_cell(model, x_test, y, attack, cfg.radii, cfg.seed, progress.advance)]
                df = merge(df, pd.DataFrame(rows))
                write_results(results_csv, df)
                progress.cell_done()
    if df is not None and not df.empty:
        plot_robustness(df, out / "robustness.png")
    return df


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Adversarial accuracy with runs as rows and radii as columns, per (dataset, task, suite, attack)."""
    return df.pivot_table(index=["dataset", "task", "suite", "attack", "learner", "run"], columns="radius",
                          values="adversarial_accuracy", aggfunc="first")


__all__ = ["BenchConfig", "BenchProgress", "bench", "run_cell", "obtain_learner", "test_indices", "summary_table",
           "DatasetError"]
