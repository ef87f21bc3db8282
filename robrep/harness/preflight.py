"""Everything a benchmark checks before it writes its first byte (``bench`` and ``bench --dry-run`` alike).

``preflight(cfg)`` resolves the learners and checks their configs, the device, the data sets and
what the options mean for them (test points, a data folder nobody reads, tasks), and the output
folder (``robrep.folders``). A learner that cannot be resolved or configured is a skip (the run
goes on without it, reported at the end), unless none is left: then, as for every other bad
option, a ``ConfigError`` says what was expected and nothing has been written.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from robrep.attacks import suite_attacks
from robrep.data import Dataset, load_dataset, reads_folder
from robrep.encoders import EncoderSource, LearnerError, resolve
from robrep.encoders.resolve import planned_run
from robrep.folders import check_folder
from robrep.harness.config import DEFAULT_N_EXAMPLES, BenchConfig
from robrep.registry import UnknownNameError
from robrep.train import resolve_device
from robrep.validate import ConfigError


@dataclass
class Checked:
    """What the checks found: the usable learners, the ones skipped (label, error) and the loaded data sets."""

    sources: list[EncoderSource]
    datasets: list[Dataset]
    skipped: list[tuple[str, Exception]] = field(default_factory=list)


def preflight(cfg: BenchConfig, *, folder: str | None = "bench", force: bool = False, strict: bool = False) -> Checked:
    """Check ``cfg`` whole (see the module docstring). ``folder``: the kind of folder ``cfg.out`` must be (None:
    not checked, e.g. on a rank that does not write). ``strict``: a learner that cannot be resolved or configured
    raises its error (``UnknownNameError`` or ``LearnerError``) instead of being skipped."""
    resolve_device(cfg.device)  # a device that is not here: ConfigError
    if folder is not None:
        check_folder(cfg.out, folder, force=force)
    sources: list[EncoderSource] = []
    skipped: list[tuple[str, Exception]] = []
    for spec in cfg.learners:
        try:
            sources.append(resolve(spec, cfg.learner_config, cfg.preprocessing))
        except (UnknownNameError, LearnerError) as e:
            skipped.append((getattr(e, "label", None) or str(spec), e))
    if cfg.data_root is not None and not any(reads_folder(name) for name in cfg.datasets):
        raise ConfigError(f"--data-root {cfg.data_root} is read by no data set of this run "
                          f"({', '.join(cfg.datasets)} {'is' if len(cfg.datasets) == 1 else 'are'} embedded); "
                          "leave it out, or name a folder-backed data set (mnist, colormnist, celeba)")
    datasets = [load_dataset(name, root=cfg.data_root, download=cfg.download) for name in cfg.datasets]
    for ds in datasets:
        if cfg.n_examples is not None and cfg.n_examples > len(ds.test) and cfg.n_examples != DEFAULT_N_EXAMPLES:
            raise ConfigError(f"n_examples {cfg.n_examples}: {ds.name}'s test split has {len(ds.test):,} images; "
                              f"give at most {len(ds.test)}, or leave it out (the default attacks at most "
                              f"{DEFAULT_N_EXAMPLES})")
        for task in cfg.tasks or [t.name for t in ds.tasks]:  # an unknown task: DatasetError naming the tasks
            suite_attacks(cfg.suites, ds.task(task).n_classes, steps=cfg.steps, restarts=cfg.restarts, norm=cfg.norm,
                          loss=cfg.loss)
        for src in list(sources):
            if src.kind != "learner":
                continue
            try:
                planned_run(src, ds, seed=cfg.seed, arch=cfg.arch, epochs=cfg.epochs)
            except (ValueError, TypeError, ConfigError) as e:  # a config the learner refuses
                sources.remove(src)
                skipped.append((src.label, LearnerError(src.label, f"config refused: {e}", src.source,
                                                        "checking its config")))
    if strict and skipped:
        raise skipped[0][1]
    if not sources:
        reasons = "; ".join(f"{label}: {e}" for label, e in skipped)
        raise ConfigError(f"no learner of this run can be benchmarked ({reasons})")
    return Checked(sources, datasets, skipped)


__all__ = ["Checked", "preflight"]
