"""The benchmark harness: freeze encoders, probe every task, attack probe∘encoder, record rows.

``bench()`` (``robrep.bench``) is the Python API behind ``robrep bench``. Each cell (learner run, data set,
task, suite, attack) is a pure function of (encoder, probe, test indices, attack settings,
seed): see ``run_cell``. Finished cells are written to ``<out>/results.csv`` at once and
skipped when the run is resumed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

import robrep
from robrep.attacks import Attack, suite_attacks
from robrep.attacks.base import radius_grid
from robrep.checkpoint import (
    CheckpointError, atomic_write, load_checkpoint, read_config, sha256_bytes, short_hash, state_bytes,
)
from robrep.checks import CHECK_COLUMNS, check_result
from robrep.data import Dataset, DatasetError, load_dataset
from robrep.learners import create_learner
from robrep.plots import attack_grid, plot_robustness
from robrep.plugins import ContractError, check_encoder
from robrep.probes import ProbedEncoder, features, freeze, train_probe
from robrep.registry import LEARNERS, UnknownNameError
from robrep.results import COLUMNS, cell_key, cell_keys, done_cells, merge, read_results, write_results
from robrep.train import resolve_device, run_dir_for, train

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
    norm: str = "linf"  # threat model: linf (every suite) or l2 (native suite only)
    suites: tuple[str, ...] = ("native",)  # native, torchattacks, foolbox, plugins (see `robrep list`)
    steps: int = 100
    restarts: int = 10
    n_examples: int | None = 1000  # test points attacked (None: the whole test split)
    label_fraction: float = 1.0  # fraction of the training labels the probe sees (stratified; paper fig. 8)
    images: float | None = None  # write a grid of clean / adversarial images and reconstructions at this radius
    seed: int = 0
    device: str = "cpu"
    out: str = "robrep-bench"
    data_root: str | None = None
    retrain: bool = False  # ignore cached checkpoints

    def __post_init__(self) -> None:
        for name in ("learners", "datasets", "radii", "suites"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.tasks is not None:
            self.tasks = tuple(self.tasks)
        if not self.learners or not self.datasets or not self.radii:
            raise ValueError("a benchmark needs at least one learner, one data set and one radius")
        if self.n_examples is not None and self.n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {self.n_examples}")
        self.label_fraction = float(self.label_fraction)  # 1 and 1.0 are the same cell on resume
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction must be in (0, 1], got {self.label_fraction}")

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


def learner_name(spec: str) -> str:
    """The registered learner of a spec: ``NAME`` or ``NAME:LABEL`` (a labelled variant, configured
    under ``learner_config."NAME:LABEL"``, so one experiment can hold several configs of one learner)."""
    return spec.split(":", 1)[0]


def obtain_learner(spec: str, ds: Dataset, cfg: BenchConfig, progress: BenchProgress):
    """A frozen learner for ``spec`` (a registered name, ``NAME:LABEL``, or a checkpoint folder), trained if needed."""
    if Path(spec).is_dir():
        learner = load_checkpoint(spec, map_location=cfg.device)
        if tuple(learner.config.shape) != ds.shape:
            raise ValueError(f"checkpoint {spec} expects inputs {learner.config.shape}, data set {ds.name} has {ds.shape}")
        return freeze(learner), Path(spec)
    name = learner_name(spec)
    fields = {f.name for f in dataclasses.fields(LEARNERS.get(name).config_class)}
    overrides = dict(cfg.learner_config.get(spec, {}))
    for key, value in (("arch", cfg.arch), ("epochs", cfg.epochs)):  # only where the learner has the field
        if key in fields and key not in overrides and value is not None:
            overrides[key] = value
    config = dataclasses.asdict(create_learner(name, shape=ds.shape, **overrides).config)
    run_dir = run_dir_for(name, ds.name, config, cfg.seed)
    if not cfg.retrain:
        try:
            if read_config(run_dir)["config"] == json.loads(json.dumps(config)):
                log.info("reusing checkpoint %s", run_dir)
                return freeze(load_checkpoint(run_dir, map_location=cfg.device)), run_dir
        except CheckpointError:
            pass
    steps_total = config["epochs"] * -(-len(ds.train) // config["batch_size"]) if "epochs" in config else None
    progress.phase(f"train {spec} on {ds.name}", steps_total)

    def on_step(epoch, step, steps_per_epoch, parts):
        progress.advance(1, f"epoch {epoch + 1}  " + "  ".join(f"{k} {v:.1f}" for k, v in parts.items()))

    learner = train(name, ds, seed=cfg.seed, device=cfg.device, out=run_dir, callback=on_step, **overrides)
    return freeze(learner), run_dir


def test_indices(n_test: int, n_examples: int | None, seed: int) -> torch.Tensor:
    """The attacked test points: all of them, or a fixed random subset (sorted) chosen by ``seed``."""
    if n_examples is None or n_examples >= n_test:
        return torch.arange(n_test)
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))[:n_examples].sort().values


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


def run_cell(model: ProbedEncoder, x: torch.Tensor, y: torch.Tensor, attack: Attack, radii, seed: int,
             progress=None) -> tuple[list[dict], torch.Tensor]:
    """Attack ``model`` on (x, y) at every radius and check the result: the pure unit of work.

    Returns one partial row per radius (attack results and checks, no provenance) and the
    per-example robust masks, (n_radii, N) bool in the order of ``sorted(radii)``.
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
    return rows, torch.stack([res.robust[r] for r in res.radii]).cpu()


def save_probe(probe: torch.nn.Linear, path: Path) -> str:
    data = state_bytes(probe)
    atomic_write(path, data)
    return sha256_bytes(data)


def _masks_path(out: Path, row: dict, radii) -> Path:
    """Where a cell's per-example robust masks live (the worst case is computed from them)."""
    tag = short_hash([cell_key({**row, "radius": None}), row["probe_sha256"], radius_grid(radii)])
    return out / "examples" / row["run"] / f"{row['dataset']}-{row['task']}" / f"{row['suite']}--{row['attack']}--{tag}.safetensors"


def _save_masks(path: Path, radii, masks: torch.Tensor, idx: torch.Tensor) -> None:
    atomic_write(path, st_save({"radii": torch.tensor(radius_grid(radii), dtype=torch.float64),
                                "robust": masks.to(torch.uint8).contiguous(), "indices": idx.contiguous()}))


def consistency_warnings(accuracy: list[tuple[Attack, float]]) -> list[str]:
    """design/evaluation.md: iterative attacks should beat single-step ones, and a black-box attack
    should not beat the white-box ones by much (a sign of gradient masking)."""
    def label(a):
        return f"{a.suite}/{a.name}"

    warnings = []
    single = [(acc, a) for a, acc in accuracy if a.kind == "single-step"]
    for acc, a in ((acc, a) for a, acc in accuracy if a.kind == "iterative"):
        for s_acc, s in single:
            if acc > s_acc + 0.01:
                warnings.append(f"iterative {label(a)} ({acc:.3f}) weaker than single-step {label(s)} ({s_acc:.3f})")
    # white-box: the gradient attacks alone (AutoAttack holds Square, so it cannot tell on it)
    white = [acc for a, acc in accuracy if a.kind != "black-box" and not a.includes_black_box]
    for acc, a in ((acc, a) for a, acc in accuracy if a.kind == "black-box"):
        if white and acc < min(white) - 0.02:
            warnings.append(f"black-box {label(a)} ({acc:.3f}) beats every gradient attack "
                            f"(best {min(white):.3f}): possible gradient masking")
    return warnings


def worst_case_rows(base: dict, cells: list[tuple[Attack, pd.DataFrame, torch.Tensor]], radii) -> list[dict]:
    """Per radius, a point is robust only if every attack that ran failed on it.

    ``cells`` holds, per attack, its result rows and its (n_radii, N) robust masks."""
    radii = radius_grid(radii)
    robust = torch.stack([m for _, _, m in cells]).all(dim=0)  # (n_radii, N)
    rows = []
    for i, r in enumerate(radii):
        at_r = [(a, df[df["radius"] == r].iloc[0]) for a, df, _ in cells]
        first = at_r[0][1]
        row = {
            **base, "suite": "worst-case", "attack": "worst-case",
            "attack_config": json.dumps(sorted(f"{a.suite}/{a.name}: {json.dumps(a.settings(), sort_keys=True)}"
                                               for a, _, _ in cells)),
            "norm": first["norm"], "steps": None, "restarts": None, "step_size": None, "radius": r,
            "nominal_accuracy": first["nominal_accuracy"], "adversarial_accuracy": robust[i].float().mean().item(),
            "n_attacked": None, "wall_seconds": float(sum(v["wall_seconds"] for _, v in at_r)),
            "warnings": "; ".join(consistency_warnings([(a, float(v["adversarial_accuracy"])) for a, v in at_r])),
        }
        for col in (*CHECK_COLUMNS, "checks_passed"):
            row[col] = bool(all(bool(v[col]) for _, v in at_r))
        row["n_rejected"] = int(sum(int(v["n_rejected"]) for _, v in at_r))
        if i > 0:
            row["check_monotone"] = row["check_monotone"] and row["adversarial_accuracy"] <= rows[-1]["adversarial_accuracy"]
        rows.append(row)
    return rows


def bench(config: BenchConfig | None = None, progress: BenchProgress | None = None, **overrides) -> pd.DataFrame:
    """Run a benchmark; returns every result row of ``<out>/results.csv`` as a DataFrame."""
    cfg = dataclasses.replace(config, **overrides) if config else BenchConfig(**overrides)
    progress = progress or BenchProgress()
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    results_csv = out / "results.csv"
    df = read_results(results_csv)
    done = done_cells(df)
    radii = set(float(r) for r in cfg.radii)
    datasets = [load_dataset(name, root=cfg.data_root) for name in cfg.datasets]
    plan = [(ds, [ds.task(t) for t in cfg.tasks] if cfg.tasks else list(ds.tasks)) for ds in datasets]

    def attacks_for(task):
        return suite_attacks(cfg.suites, task.n_classes, steps=cfg.steps, restarts=cfg.restarts, norm=cfg.norm)

    skipped: list[dict] = []
    progress.cells(sum(len(cfg.learners) * len(attacks_for(t)) for _, tasks in plan for t in tasks))
    for ds, tasks in plan:
        idx = test_indices(len(ds.test), cfg.n_examples, cfg.seed)
        x_test = ds.test.batch(idx).to(device)
        for spec in cfg.learners:
            try:  # a learner that cannot be had, or breaks the encoder contract, is reported and skipped
                learner, run_dir = obtain_learner(spec, ds, cfg, progress)
                check_encoder(learner, ds.train.batch(slice(0, 8)).to(device), name=spec)
            except (ContractError, UnknownNameError, CheckpointError, FloatingPointError, ValueError, KeyError,
                    AttributeError, TypeError) as e:
                log.error("learner %r skipped on %s: %s", spec, ds.name, e)
                skipped.append({"learner": spec, "dataset": ds.name, "error": str(e)})
                for task in tasks:
                    for _ in attacks_for(task):
                        progress.cell_done()
                continue
            meta = read_config(run_dir)
            train_feats = features(learner, ds.train.images, device=device)
            for task in tasks:
                y_train = ds.train.labels[task.name].to(device)
                seen = probe_indices(y_train.cpu(), cfg.label_fraction, cfg.seed).to(device)
                probe = train_probe(train_feats[seen], y_train[seen], task.n_classes)
                suffix = "" if cfg.label_fraction == 1 else f"-labels{cfg.label_fraction:g}"
                probe_sha = save_probe(probe, out / "probes" / run_dir.name / f"{ds.name}-{task.name}{suffix}.safetensors")
                model = ProbedEncoder(learner, probe)
                y = ds.test.labels[task.name][idx].to(device)
                if cfg.images is not None:
                    spread = torch.linspace(0, len(idx) - 1, 8).long().to(device)  # across classes, not the first 8
                    attack_grid(model, x_test[spread], y[spread], cfg.images, cfg.steps,
                                out / "images" / f"{run_dir.name}-{ds.name}-{task.name}-r{cfg.images:g}.png",
                                title=f"{spec} on {ds.name} / {task.name}: PGD at radius {cfg.images:g}")
                base = {
                    "learner": meta["learner"], "label": spec if not Path(spec).is_dir() else run_dir.name,
                    "run": run_dir.name, "checkpoint": str(run_dir.resolve()),
                    "learner_config": json.dumps(meta["config"], sort_keys=True), "arch": meta["config"].get("arch"),
                    "dataset": ds.name, "task": task.name, "n_classes": task.n_classes, "n_examples": len(idx),
                    "label_fraction": cfg.label_fraction, "n_probe_labels": len(seen),
                    "seed": cfg.seed, "encoder_sha256": meta["sha256"], "probe_sha256": probe_sha,
                    "probe_train_accuracy": (probe(train_feats[seen]).argmax(1) == y_train[seen]).float().mean().item(),
                    "robrep_version": robrep.__version__, "torch_version": torch.__version__, "device": str(device),
                }
                cells = []  # (attack, rows, masks) for the worst case
                for attack in attacks_for(task):
                    settings = attack.settings()
                    cell = {
                        **base, "suite": attack.suite, "attack": attack.name,
                        "attack_config": json.dumps(settings, sort_keys=True), "norm": attack.norm,
                        "steps": settings.get("steps", settings.get("kwargs", {}).get("steps")),
                        # re-seeded runs x the library's own restarts (APGD's n_restarts)
                        "restarts": settings.get("restarts", 1) * settings.get("kwargs", {}).get("n_restarts", 1)
                        if "restarts" in settings or "n_restarts" in settings.get("kwargs", {}) else None,
                        "step_size": f"{settings['rel_stepsize']} * radius / steps" if "rel_stepsize" in settings
                        else None,
                    }
                    mask_path = _masks_path(out, cell, cfg.radii)
                    key = cell_key({**cell, "radius": None})
                    if radii <= done.get(key, set()) and mask_path.is_file():  # every radius is there
                        log.info("skipping finished cell %s / %s / %s / %s", run_dir.name, ds.name, task.name, attack)
                        mine = pd.Series([k == key for k in cell_keys(df)], index=df.index)
                        old = df[mine & df["radius"].astype(float).isin(radii)]
                        cells.append((attack, old, load_file(mask_path)["robust"].bool()))
                        progress.cell_done()
                        continue
                    progress.phase(f"{attack.suite}/{attack.name}: {spec} / {ds.name} / {task.name}",
                                   attack.units(cfg.radii))
                    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                    partial, masks = run_cell(model, x_test, y, attack, cfg.radii, cfg.seed, progress.advance)
                    rows = pd.DataFrame([{**cell, **r, "timestamp": stamp} for r in partial])
                    cells.append((attack, rows, masks))
                    _save_masks(mask_path, cfg.radii, masks, idx)
                    df = merge(df, rows)
                    write_results(results_csv, df)
                    progress.cell_done()
                if len(cells) > 1:
                    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                    worst = worst_case_rows({**base, "timestamp": stamp}, cells, cfg.radii)
                    for w in worst:
                        if w["warnings"]:
                            log.warning("%s / %s / radius %g: %s", run_dir.name, task.name, w["radius"], w["warnings"])
                    df = merge(df, pd.DataFrame(worst))
                    write_results(results_csv, df)
    if df is None:
        df = merge(None, pd.DataFrame(columns=list(COLUMNS)))
    if not df.empty:
        shown = "worst-case" if (df["suite"] == "worst-case").any() else None
        plot_robustness(df, out / "robustness.png", suite=shown)
    df.attrs["skipped"] = skipped  # learners reported and skipped, with their errors
    return df


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Adversarial accuracy with runs as rows and radii as columns, per (dataset, task, suite, attack)."""
    return df.pivot_table(index=["dataset", "task", "suite", "attack", "label", "run"], columns="radius",
                          values="adversarial_accuracy", aggfunc="first")


__all__ = ["BenchConfig", "BenchProgress", "bench", "run_cell", "obtain_learner", "test_indices", "summary_table",
           "DatasetError"]
