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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file
from safetensors.torch import save as st_save

import robrep
from robrep.attacks import Attack, suite_attacks
from robrep.attacks.base import radius_grid
from robrep.checkpoint import atomic_write, sha256_bytes, short_hash, state_bytes
from robrep.checks import CHECK_COLUMNS, check_result
from robrep.data import Dataset, DatasetError, load_dataset
from robrep.encoders import (
    ContractError, EncoderSource, LearnerError, Preprocessing, check_encoder, obtain, resolve,
)
from robrep.plots import attack_grid, plot_robustness
from robrep.probes import ProbedEncoder, features, train_probe
from robrep.registry import UnknownNameError
from robrep.results import COLUMNS, cell_key, cell_keys, done_cells, merge, read_results, write_results
from robrep.train import resolve_device

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

DEFAULT_LEARNERS = ("vae", "beta-vae", "se-random", "se-adversarial")


@dataclass
class BenchConfig:
    """A whole experiment. Every field can be set in a TOML file (``--config``) or on the command line."""

    # registered names, NAME:LABEL variants, checkpoint folders, "module:attr" specs; from Python also
    # nn.Module instances or classes, factories and robrep.Encoder objects (see robrep.encoders)
    learners: tuple = DEFAULT_LEARNERS
    learner_config: dict[str, dict] = field(default_factory=dict)  # per learner label: config overrides
    # what encoders robrep does not train expect their inputs normalised with ("imagenet", "mean=... std=...",
    # or {mean, std}), unless their learner_config says otherwise; robrep learners take [0, 1]
    preprocessing: str | dict | None = None
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
            setattr(self, name, _as_tuple(getattr(self, name)))
        if self.tasks is not None:
            self.tasks = _as_tuple(self.tasks)
        if not self.learners or not self.datasets or not self.radii:
            raise ValueError("a benchmark needs at least one learner, one data set and one radius")
        if self.n_examples is not None and self.n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {self.n_examples}")
        Preprocessing.parse(self.preprocessing)  # a bad one is refused before any work
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


def _as_tuple(value) -> tuple:
    """A config list: a single string (or object) is one item, never a sequence of letters."""
    if value is None or isinstance(value, (str, bytes, Path, torch.nn.Module, type)) or callable(value):
        return (value,)
    return tuple(value)


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
    df: pd.DataFrame | None
    done: dict
    cells_done: int = 0  # of the learner in progress (to settle the progress bar when it fails)

    def attacks_for(self, task) -> list[Attack]:
        c = self.cfg
        return suite_attacks(c.suites, task.n_classes, steps=c.steps, restarts=c.restarts, norm=c.norm)

    def record(self, rows: pd.DataFrame) -> None:
        self.df = merge(self.df, rows)
        write_results(self.out / "results.csv", self.df)

    def cell_done(self) -> None:
        self.cells_done += 1
        self.progress.cell_done()


def bench(config: BenchConfig | None = None, progress: BenchProgress | None = None, *, strict: bool = True,
          **overrides) -> pd.DataFrame:
    """Run a benchmark; returns every result row of ``<out>/results.csv`` as a DataFrame.

    Learners are resolved before any work (``robrep.encoders.resolve``). With ``strict`` (the
    default), an unknown name, a learner of the wrong type, or a learner that fails anywhere on
    its path (building, training, loading, encoding any batch, non-finite features, probing,
    attacking) raises ``UnknownNameError`` or ``robrep.LearnerError`` naming it; the rows of cells
    finished before stay in results.csv. With ``strict=False`` such a learner is logged and
    skipped, the rest of the run completes, and ``df.attrs["skipped"]`` lists each skip as a dict
    (learner, dataset, error).
    """
    cfg = dataclasses.replace(config, **overrides) if config else BenchConfig(**overrides)
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
    out = Path(cfg.out)
    df = read_results(out / "results.csv")
    run = _Run(cfg, device, out, progress or BenchProgress(), df, done_cells(df))
    datasets = [load_dataset(name, root=cfg.data_root) for name in cfg.datasets]
    plan = [(ds, [ds.task(t) for t in cfg.tasks] if cfg.tasks else list(ds.tasks)) for ds in datasets]
    run.progress.cells(sum(len(sources) * len(run.attacks_for(t)) for _, tasks in plan for t in tasks))
    for ds, tasks in plan:
        idx = test_indices(len(ds.test), cfg.n_examples, cfg.seed)
        for src in sources:
            run.cells_done = 0
            try:
                _bench_learner(run, src, ds, tasks, idx)
            except LearnerError as e:
                skip(src.label, ds.name, e)
                for _ in range(sum(len(run.attacks_for(t)) for t in tasks) - run.cells_done):
                    run.progress.cell_done()
    df = run.df if run.df is not None else merge(None, pd.DataFrame(columns=list(COLUMNS)))
    if not df.empty:
        shown = "worst-case" if (df["suite"] == "worst-case").any() else None
        plot_robustness(df, out / "robustness.png", suite=shown)
    df.attrs["skipped"] = skipped  # learners reported and skipped, with their errors
    return df


def _bench_learner(run: _Run, src: EncoderSource, ds: Dataset, tasks, idx: torch.Tensor) -> None:
    """Every cell of one learner on one data set: obtain it, probe each task, attack, record."""
    cfg, device, out = run.cfg, run.device, run.out
    with _stage(src, ds.name, "while being built, trained or loaded"):
        got = obtain(src, ds, seed=cfg.seed, device=device, arch=cfg.arch, epochs=cfg.epochs, retrain=cfg.retrain,
                     progress=run.progress)
    with _stage(src, ds.name, "the contract check on 8 training images"):
        check_encoder(got.encoder, ds.train.batch(slice(0, 8)).to(device))
    with _stage(src, ds.name, "while encoding the training split"):
        train_feats = features(got.encoder, ds.train.images, device=device)
    x_test = ds.test.batch(idx).to(device)
    for task in tasks:
        y_train = ds.train.labels[task.name].to(device)
        seen = probe_indices(y_train.cpu(), cfg.label_fraction, cfg.seed).to(device)
        with _stage(src, ds.name, f"while fitting the probe for task {task.name}"):
            probe = train_probe(train_feats[seen], y_train[seen], task.n_classes)
            if not all(torch.isfinite(p).all() for p in probe.parameters()):
                raise ContractError("the probe's weights are not finite (the features are too large or degenerate)")
        suffix = "" if cfg.label_fraction == 1 else f"-labels{cfg.label_fraction:g}"
        probe_sha = save_probe(probe, out / "probes" / got.run / f"{ds.name}-{task.name}{suffix}.safetensors")
        model = ProbedEncoder(got.encoder, probe)
        y = ds.test.labels[task.name][idx].to(device)
        if cfg.images is not None:
            spread = torch.linspace(0, len(idx) - 1, 8).long().to(device)  # across classes, not the first 8
            with _stage(src, ds.name, f"while drawing the image grid for task {task.name}"):
                attack_grid(model, x_test[spread], y[spread], cfg.images, cfg.steps,
                            out / "images" / f"{got.run}-{ds.name}-{task.name}-r{cfg.images:g}.png",
                            title=f"{src.label} on {ds.name} / {task.name}: PGD at radius {cfg.images:g}")
        base = {
            "learner": got.learner, "label": src.label, "run": got.run, "checkpoint": got.checkpoint,
            "source": got.source, "learner_config": json.dumps(got.config, sort_keys=True), "arch": got.arch,
            "dataset": ds.name, "task": task.name, "n_classes": task.n_classes, "n_examples": len(idx),
            "label_fraction": cfg.label_fraction, "n_probe_labels": len(seen),
            "seed": cfg.seed, "encoder_sha256": got.sha256, "probe_sha256": probe_sha,
            "probe_train_accuracy": (probe(train_feats[seen]).argmax(1) == y_train[seen]).float().mean().item(),
            "robrep_version": robrep.__version__, "torch_version": torch.__version__, "device": str(device),
        }
        cells = []  # (attack, rows, masks) for the worst case
        radii = set(float(r) for r in cfg.radii)
        for attack in run.attacks_for(task):
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
            if radii <= run.done.get(key, set()) and mask_path.is_file():  # every radius is there
                log.info("skipping finished cell %s / %s / %s / %s", got.run, ds.name, task.name, attack)
                df = run.df
                mine = pd.Series([k == key for k in cell_keys(df)], index=df.index)
                old = df[mine & df["radius"].astype(float).isin(radii)]
                cells.append((attack, old, load_file(mask_path)["robust"].bool()))
                run.cell_done()
                continue
            run.progress.phase(f"{attack.suite}/{attack.name}: {src.label} / {ds.name} / {task.name}",
                               attack.units(cfg.radii))
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            with _stage(src, ds.name, f"under attack {attack.suite}/{attack.name} (task {task.name})"):
                partial, masks = run_cell(model, x_test, y, attack, cfg.radii, cfg.seed, run.progress.advance)
            rows = pd.DataFrame([{**cell, **r, "timestamp": stamp} for r in partial])
            cells.append((attack, rows, masks))
            _save_masks(mask_path, cfg.radii, masks, idx)
            run.record(rows)
            run.cell_done()
        if len(cells) > 1:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            worst = worst_case_rows({**base, "timestamp": stamp}, cells, cfg.radii)
            for w in worst:
                if w["warnings"]:
                    log.warning("%s / %s / radius %g: %s", got.run, task.name, w["radius"], w["warnings"])
            run.record(pd.DataFrame(worst))


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Adversarial accuracy with runs as rows and radii as columns, per (dataset, task, suite, attack)."""
    return df.pivot_table(index=["dataset", "task", "suite", "attack", "label", "run"], columns="radius",
                          values="adversarial_accuracy", aggfunc="first")


__all__ = ["BenchConfig", "BenchProgress", "bench", "run_cell", "test_indices", "summary_table", "DatasetError"]
