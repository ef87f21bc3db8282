"""Running a benchmark: freeze encoders, probe every task, attack probe∘encoder, record rows.

``bench()`` (``robrep.bench``) is the Python API behind ``robrep bench``. It runs the plan
(``robrep.harness.plan``) in two phases, on one process or on every rank of a torchrun launch
(``robrep.distributed.World``), with the same numbers either way:

1. **prepare**, one unit per job (learner, data set): obtain the encoder (train it, or load it),
   check its contract, and fit and save a probe per task (``robrep.probes``), with a record of
   what it was fitted for. A learner is trained whole by one rank, so its checkpoint is the one a
   single process would make.
2. **attack**, one unit per unfinished cell (learner run, data set, task, suite, attack): a pure
   function of (encoder, saved probe, test indices, attack settings, seed), see ``run_cell``.
   Its rows are posted as one file (``store.post``) the moment it is done.

Units are handed out from shared counters, so a rank that finishes early takes the next one. A
job's cells are queued the moment it is prepared, so ranks attack the cells of a learner that
is ready while another rank still trains a slow one.
Rank 0, the one writer, then collects posted cells into the results store (``store.collect``),
adds the worst case of every task and exports ``<out>/results.csv``. Finished cells (every
radius stored, masks on disk) are skipped when a run is resumed, whatever killed it.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from robrep.attacks import Attack, AttackResult
from robrep.attacks.pgd import PGD
from robrep.attacks.stacked import Cell, can_stack, run_stacked
from robrep.io import atomic_write, short_hash
from robrep.checks import check_result
from robrep.data import Dataset, cache_dir
from robrep.distributed import World
from robrep.encoders import ContractError, EncoderSource, LearnerError, check_encoder, is_learner, obtain
from robrep.encoders.resolve import Obtained, planned_run
from robrep.harness.config import BenchConfig, options_signature, with_aliases
from robrep.harness.migrate import adopt_old_probes
from robrep.harness.plan import Job, make_jobs, needs_training, probe_indices
from robrep.harness.preflight import preflight
from robrep.harness.store import ResultsStore, post
from robrep.board.plots import image_grid, plot_robustness
from robrep.progress import Progress, log_progress
from robrep.probes import (
    PROBE_FIT, PROBE_FIT_ADVERSARIAL, ProbedEncoder, features, probe_file, read_probe, save_probe, train_probe,
    train_adversarial_probe, write_probe_record,
)
from robrep.rng import kept_random_state
from robrep.harness.cells import cell_rows, encoder_row, result_rows
from robrep.harness.worst import stored_as, worst_case_rows
from robrep.rows.files import read_results
from robrep.rows.layout import cell_key, cell_keys, encoder_fields, radius_grid, row_key
from robrep.rows.masks import done_cells, is_finished, load_masks, masks_path, save_masks
from robrep.threads import use_threads
from robrep.train import resolve_device
from robrep.validate import ConfigError

log = logging.getLogger(__name__)


def run_cell(model: ProbedEncoder, x: torch.Tensor, y: torch.Tensor, attack: Attack, radii, seed: int,
             progress=None, prior: dict[str, torch.Tensor] | None = None, cascade: bool = False,
             ) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Attack ``model`` on (x, y) at every radius and check the result: the pure unit of work.

    Returns one partial row per radius (attack results and checks, no provenance) and the per-example
    masks ``{"robust": ..., "late": ...}``, each (n_radii, N) bool in the order of ``sorted(radii)``
    (``late``: broken only late, see ``AttackResult.late``). In a ``cascade``, ``prior`` holds the masks of
    the stage before (None for the first): only the points still robust there are attacked, the masks and
    accuracies are the cascade's so far, and each row counts the points this attack broke first
    (``n_broken_first``).
    """
    before = _prior_result(prior, radii, x.device)
    res = attack.run(model, x, y, list(radii), seed=seed, progress=progress, prior=before)
    return _cell_outcome(model, x, y, attack, res, seed, before, cascade)


def run_cells_stacked(models: list[ProbedEncoder], x: torch.Tensor, ys: list[torch.Tensor], attack: Attack, radii,
                      seed: int, progress=None, priors: list | None = None, cascade: bool = False,
                      ) -> list[tuple[list[dict], dict[str, torch.Tensor]]]:
    """``run_cell`` for each task of one encoder (``models``: its probes on the one encoder, ``ys`` their labels,
    ``priors`` their cascade masks), attacked in one stacked pass (``robrep.attacks.stacked``): the same rows and
    masks, one encoder pass per step for all of them. Each row's ``wall_seconds`` is its share of the pass."""
    priors = priors or [None] * len(models)
    befores = [_prior_result(p, radii, x.device) for p in priors]
    results = run_stacked(attack, [Cell(m, x, y, b) for m, y, b in zip(models, ys, befores)], list(radii), seed,
                          progress)
    return [_cell_outcome(m, x, y, attack, res, seed, b, cascade)
            for m, y, res, b in zip(models, ys, results, befores)]


def _prior_result(prior: dict[str, torch.Tensor] | None, radii, device) -> AttackResult | None:
    """The masks of a cascade's stage before, as the ``AttackResult`` an attack's ``run`` takes as its prior."""
    if prior is None:
        return None
    grid = radius_grid(radii)
    return AttackResult(grid, clean_correct=prior["robust"][0].to(device),
                        robust={r: prior["robust"][i].to(device) for i, r in enumerate(grid)},
                        late={r: prior["late"][i].to(device) for i, r in enumerate(grid)})


def _cell_outcome(model, x, y, attack: Attack, res: AttackResult, seed: int, before: AttackResult | None,
                  cascade: bool) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """A finished attack's rows (results and checks) and masks (``run_cell``)."""
    checks = check_result(model, x, y, res, attack.norm, seed, prior=before)
    rows = result_rows(res, checks)
    if cascade:
        for row, r in zip(rows, res.radii):
            had = before.robust[r] if before is not None else res.clean_correct
            row["n_broken_first"] = int((had & ~res.robust[r]).sum())
    return rows, {k: torch.stack([getattr(res, k)[r] for r in res.radii]).cpu() for k in ("robust", "late")}


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
class _Stages:
    """The cells of one task a unit runs (``_Run.attack``), with what they share: the probed model, the labels and,
    in a cascade, the masks of the last stage run."""

    task: str
    attacks: list[Attack]
    cells: list[dict]
    chained: bool
    model: ProbedEncoder
    y: torch.Tensor
    todo: list[int]  # the cells left to run, in order
    prior: dict[str, torch.Tensor] | None = None

    @property
    def head(self) -> Attack:
        """The attack of the next cell to run."""
        return self.attacks[self.todo[0]]


@dataclass
class _Run:
    """One bench on one rank: its settings, its plan, and what this rank holds on to between units."""

    cfg: BenchConfig
    device: torch.device
    out: Path
    progress: Progress
    world: World
    jobs: list[Job]
    strict: bool
    _got: tuple[int, Obtained] | None = None  # the last encoder this rank obtained (cells of a job come in a row)
    _test: tuple[int, torch.Tensor] | None = None

    # --- failures --------------------------------------------------------------------------------------------

    @contextmanager
    def guard(self, j: int):
        """A LearnerError of job ``j`` raises (strict) or is shared with every rank, whose later units of that
        job are then skipped."""
        try:
            yield
        except LearnerError as e:
            if self.strict:
                raise
            job = self.jobs[j]
            log.error("learner %s skipped on %s: %s", job.src.label, job.ds.name, e)
            self.world.note("skip", j, {"learner": job.src.label, "dataset": job.ds.name, "error": str(e)})

    def skipped(self, j: int) -> bool:
        return self.world.noted("skip", j) is not None

    # --- what units need -------------------------------------------------------------------------------------

    def encoder(self, j: int, train: bool = False) -> Obtained:
        if self._got is not None and self._got[0] == j:
            return self._got[1]
        cfg, job = self.cfg, self.jobs[j]
        self._got = self._test = None
        with _stage(job.src, job.ds.name, "while being built, trained or loaded"):
            got = obtain(job.src, job.ds, seed=cfg.seed, device=self.device, arch=cfg.arch, epochs=cfg.epochs,
                         retrain=cfg.retrain and train, progress=self.progress, train=train)
        self._got = (j, got)
        return got

    def x_test(self, j: int) -> torch.Tensor:
        if self._test is None or self._test[0] != j:
            job = self.jobs[j]
            self._test = (j, job.ds.test.batch(job.idx).to(self.device))
        return self._test[1]

    def probe_path(self, got: Obtained, ds: Dataset, task: str, probe: str | None = None) -> Path:
        return probe_file(self.out, got.run, ds.name, task, self.cfg.label_fraction, probe or self.cfg.probe_mode)

    def asked(self, got: Obtained, ds: Dataset, task: str, probe: str | None = None) -> dict:
        """What the probe of ``task`` must have been fitted for to be reused (``robrep.probes.read_probe``)."""
        asked = {"encoder_sha256": got.sha256, "dataset": ds.name, "task": task,
                 "label_fraction": float(self.cfg.label_fraction), "seed": self.cfg.seed, "fit": PROBE_FIT}
        probe = probe or self.cfg.probe_mode
        return asked if probe == "standard" else {**asked, "fit": PROBE_FIT_ADVERSARIAL, "probe": probe}

    def standard_probe(self, j: int, got: Obtained, task, feats: dict) -> tuple:
        """The task's probe fitted on clean features (saved, with its record), or the saved one if it is valid.
        ``feats``: the training split's features, computed once per job when a probe needs them."""
        cfg, job = self.cfg, self.jobs[j]
        src, ds = job.src, job.ds
        path = self.probe_path(got, ds, task.name, "standard")
        saved = read_probe(path, self.asked(got, ds, task.name, "standard"))
        if saved is not None:
            return saved
        if "train" not in feats:
            with _stage(src, ds.name, "while encoding the training split"):
                feats["train"] = features(got.encoder, ds.train.images, device=self.device)
        y_train = ds.train.labels[task.name].to(self.device)
        seen = probe_indices(y_train.cpu(), cfg.label_fraction, cfg.seed).to(self.device)
        with _stage(src, ds.name, f"while fitting the probe for task {task.name}"):
            probe = train_probe(feats["train"][seen], y_train[seen], task.n_classes)
            if not all(torch.isfinite(p).all() for p in probe.parameters()):
                raise ContractError("the probe's weights are not finite (features too large or degenerate)")
        accuracy = (probe(feats["train"][seen]).argmax(1) == y_train[seen]).float().mean().item()
        facts = {**self.asked(got, ds, task.name, "standard"), "probe_sha256": save_probe(probe, path),
                 "n_probe_labels": len(seen), "probe_train_accuracy": accuracy}
        write_probe_record(path, facts)
        return probe, facts

    def adversarial_probe(self, j: int, got: Obtained, task, standard: tuple) -> tuple:
        """The task's adversarially trained probe (``robrep.probes.train_adversarial_probe``, from the standard
        one), or the saved one if it is valid."""
        cfg, job = self.cfg, self.jobs[j]
        src, ds = job.src, job.ds
        path = self.probe_path(got, ds, task.name)
        saved = read_probe(path, self.asked(got, ds, task.name))
        if saved is not None:
            return saved
        y_train = ds.train.labels[task.name].to(self.device)
        seen = probe_indices(y_train.cpu(), cfg.label_fraction, cfg.seed).to(self.device)
        images = ds.train.images[seen.cpu()].to(self.device)
        with _stage(src, ds.name, f"while training the adversarial probe for task {task.name}"):
            probe = train_adversarial_probe(got.encoder, images, y_train[seen], standard[0].to(self.device),
                                            eps=cfg.probe_eps, norm=cfg.norm, seed=cfg.seed)
            if not all(torch.isfinite(p).all() for p in probe.parameters()):
                raise ContractError("the adversarial probe's weights are not finite")
        with torch.no_grad():
            accuracy = (probe(features(got.encoder, ds.train.images[seen.cpu()], device=self.device)).argmax(1)
                        == y_train[seen]).float().mean().item()
        facts = {**self.asked(got, ds, task.name), "probe_sha256": save_probe(probe, path),
                 "n_probe_labels": len(seen), "probe_train_accuracy": accuracy}
        write_probe_record(path, facts)
        return probe, facts

    # --- phase 1: prepare a job -----------------------------------------------------------------------------

    def prepare(self, j: int) -> None:
        """Obtain job ``j``'s encoder (training it if needed), check it, and fit every task's probe that has no
        valid saved one (the adversarial probe starts from the standard one); share the encoder's identity with
        the writer."""
        cfg, job = self.cfg, self.jobs[j]
        src, ds = job.src, job.ds
        got = self.encoder(j, train=True)
        with _stage(src, ds.name, "the contract check on 8 training images"):
            check_encoder(got.encoder, ds.train.batch(slice(0, 8)).to(self.device))
        feats: dict = {}
        for task, _ in job.tasks:
            saved = self.standard_probe(j, got, task, feats)
            if cfg.probe != "standard":
                saved = self.adversarial_probe(j, got, task, saved)
            if cfg.images is not None:
                probe = saved[0].to(self.device)
                model = ProbedEncoder(got.encoder, probe)
                spread = torch.linspace(0, len(job.idx) - 1, 8).long()  # across classes, not the first 8
                y = ds.test.labels[task.name][job.idx][spread].to(self.device)
                x = self.x_test(j)[spread.to(self.device)]
                with _stage(src, ds.name, f"while drawing the image grid for task {task.name}"):
                    x_adv = x.clone()  # one restart of the run's PGD, in the run's norm: the first iterate that
                    if cfg.images > 0:  # flips the decision, or the last one
                        _, x_adv, _ = PGD(steps=cfg.steps, restarts=1, norm=cfg.norm).perturb(
                            model, x, y, cfg.images, torch.Generator().manual_seed(0))
                    what = "PGD" if cfg.norm == "linf" else f"{cfg.norm.upper()} PGD"
                    learner = got.encoder.module
                    reconstruct = (lambda imgs: learner.decode(learner.encode(imgs)[0])) \
                        if is_learner(learner) and callable(getattr(learner, "decode", None)) else None
                    image_grid(model, x, x_adv, y, cfg.images,
                               self.out / "images" / f"{got.run}-{ds.name}-{task.name}-r{cfg.images:g}.png",
                               title=f"{src.label} on {ds.name} / {task.name}: {what} at radius {cfg.images:g}",
                               class_names=task.class_names, norm=cfg.norm, reconstruct=reconstruct)
        self.world.note("identity", j, {"sha256": got.sha256, "run": got.run})

    # --- phase 2: attack a cell -----------------------------------------------------------------------------

    def base(self, j: int, t: int, got: Obtained, facts: dict) -> dict:
        cfg, job = self.cfg, self.jobs[j]
        task = job.tasks[t][0]
        return encoder_row(
            learner=got.learner, label=job.src.label, run=got.run, checkpoint=got.checkpoint, source=got.source,
            learner_config=got.config, arch=got.arch, dataset=job.ds.name, task=task.name, n_classes=task.n_classes,
            n_examples=len(job.idx), label_fraction=cfg.label_fraction, n_probe_labels=facts["n_probe_labels"],
            seed=cfg.seed, encoder_sha256=got.sha256, probe_sha256=facts["probe_sha256"], device=str(self.device),
            probe_train_accuracy=facts["probe_train_accuracy"], train_seconds=got.train_seconds,
            probe=cfg.probe_mode,
        )

    def attack(self, j: int, t: int, todo: list[int]) -> None:
        """Run the cells ``todo`` of (job j, task t) whole, in order, and post their rows; their masks go next to
        them. In a cascade ``todo`` is a stage and every later one, each run on the masks of the stage before."""
        stages = self._stages(j, t, todo)
        while stages.todo:
            self._run_stage(j, stages)

    def attack_tasks(self, j: int, todos: list[list[int]]) -> None:
        """Run the cells ``todos[t]`` of every task t of job j (as ``attack``), each task's in its order, and the
        tasks' turns of one stackable attack (robrep's PGD, the same settings) in one stacked pass
        (``robrep.attacks.stacked``; ``--stack-tasks``): the same rows, one encoder pass per step for all."""
        pending = [self._stages(j, t, todo) for t, todo in enumerate(todos) if todo]
        while pending:
            solo = [st for st in pending if not getattr(st.head, "stackable", False)]
            for st in solo:  # what cannot be stacked runs first, one task at a time, up to its next stackable turn
                self._run_stage(j, st)
            if not solo:
                groups: dict[str, list[_Stages]] = {}
                for st in pending:
                    groups.setdefault(f"{st.head!r} {st.chained}", []).append(st)
                for group in groups.values():
                    if can_stack(group[0].head, [st.model for st in group]):
                        self._run_stacked(j, group)
                    else:
                        for st in group:
                            self._run_stage(j, st)
            pending = [st for st in pending if st.todo]

    def _stages(self, j: int, t: int, todo: list[int]) -> _Stages:
        """What running cells ``todo`` of (job j, task t) needs: the probed model, labels, cells and, resuming a
        cascade, the masks of the stage before the first."""
        cfg, job = self.cfg, self.jobs[j]
        src, ds = job.src, job.ds
        task, attacks = job.tasks[t]
        got = self.encoder(j)
        saved = read_probe(self.probe_path(got, ds, task.name), self.asked(got, ds, task.name))
        if saved is None:
            raise LearnerError(src.label, f"the probe for task {task.name} on {ds.name} is missing or changed since "
                               "it was fitted in this run (is the output folder shared by every process?)",
                               src.source, "loading its probe")
        probe, facts = saved
        stages = _Stages(task.name, attacks, job.cells(t, self.base(j, t, got, facts)), job.is_cascade(t),
                         ProbedEncoder(got.encoder, probe.to(self.device)),
                         ds.test.labels[task.name][job.idx].to(self.device), list(todo))
        a = stages.todo[0]
        if stages.chained and a > 0:
            stages.prior = load_masks(masks_path(self.out, stages.cells[a - 1], cfg.radii))
            if "late" not in stages.prior:
                raise LearnerError(src.label, f"the cascade's stage {a - 1} on task {task.name} has masks without "
                                   "'late' (written by an older robrep); delete them to run it again",
                                   src.source, "resuming its cascade")
        return stages

    def _label(self, j: int, stages: _Stages, k: int) -> str:
        job = self.jobs[j]
        where = f" (cascade stage {k + 1} of {len(stages.attacks)})" if stages.chained else ""
        return f"{stages.attacks[k].qualname}{where}: {job.src.label} / {job.ds.name} / {stages.task}"

    def _run_stage(self, j: int, stages: _Stages) -> None:
        """Run the next of ``stages``' cells alone, post it."""
        cfg, job, k = self.cfg, self.jobs[j], stages.todo[0]
        attack = stages.attacks[k]
        self.progress.phase(self._label(j, stages, k), attack.units(cfg.radii))
        stamp, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
        with _stage(job.src, job.ds.name, f"under attack {attack.qualname} (task {stages.task})"):
            outcome = run_cell(stages.model, self.x_test(j), stages.y, attack, cfg.radii, cfg.seed,
                               self.progress.advance, prior=stages.prior, cascade=stages.chained)
        self._post(j, stages, outcome, stamp, time.perf_counter() - t0)

    def _run_stacked(self, j: int, group: list[_Stages]) -> None:
        """Run the next cell of every task in ``group`` (the same stackable attack) in one stacked pass, post each."""
        cfg, job = self.cfg, self.jobs[j]
        attack = group[0].head
        self.progress.phase(f"{attack.qualname}, {len(group)} tasks stacked: {job.src.label} / {job.ds.name}",
                            attack.units(cfg.radii) * len(group))
        stamp, t0 = time.strftime("%Y-%m-%dT%H:%M:%S%z"), time.perf_counter()
        tasks = ", ".join(st.task for st in group)
        with _stage(job.src, job.ds.name, f"under attack {attack.qualname} (tasks {tasks}, stacked)"):
            outcomes = run_cells_stacked([st.model for st in group], self.x_test(j), [st.y for st in group], attack,
                                         cfg.radii, cfg.seed, self.progress.advance,
                                         priors=[st.prior for st in group], cascade=group[0].chained)
        seconds = (time.perf_counter() - t0) / len(group)
        for st, outcome in zip(group, outcomes):
            self._post(j, st, outcome, stamp, seconds)

    def _post(self, j: int, stages: _Stages, outcome, stamp: str, seconds: float) -> None:
        """Post the finished next cell of ``stages`` (rows, and masks next to them) and move on to the one after."""
        cfg, job, k = self.cfg, self.jobs[j], stages.todo.pop(0)
        partial, masks = outcome
        cell = stages.cells[k]
        rows = cell_rows(cell, partial, stamp)
        path = masks_path(self.out, cell, cfg.radii)
        save_masks(path, cfg.radii, masks, job.idx)
        post(self.out, path.stem + "--" + short_hash(cell_key({**cell, "radius": None})), rows)
        self.progress.cell_done(self._label(j, stages, k), rows.to_dict("records"), seconds)
        if stages.chained:  # the next stage attacks what this one left
            stages.prior = masks

    # --- the writer ------------------------------------------------------------------------------------------

    def cell_base(self, j: int, t: int, identity: dict) -> dict:
        """What identifies a cell's rows before its probe is known (enough for ``is_finished``)."""
        job = self.jobs[j]
        return {"encoder_sha256": identity["sha256"], "run": identity["run"], "dataset": job.ds.name,
                "task": job.tasks[t][0].name, "n_examples": len(job.idx), "seed": self.cfg.seed,
                "label_fraction": self.cfg.label_fraction, "probe": self.cfg.probe_mode}

    def unfinished(self, j: int, done: dict) -> tuple[list[list[int]], int]:
        """The units of prepared job ``j`` left to run (``done``: the store's cells when the run began), and how
        many cells they run: one per unfinished cell, or per cascade, one from its first unfinished stage on."""
        identity = self.world.noted("identity", j)
        if identity is None:
            return [], 0
        job, units, todos = self.jobs[j], [], []
        for t in range(len(job.tasks)):
            todo = [a for a, cell in enumerate(job.cells(t, self.cell_base(j, t, identity)))
                    if not is_finished(done, cell, self.out, self.cfg.radii)]
            if job.is_cascade(t) and todo:
                todo = list(range(todo[0], len(job.tasks[t][1])))
                units.append([j, t, todo])
            else:
                units += [[j, t, [a]] for a in todo]
            todos.append(todo)
        n = sum(map(len, todos))
        if self.cfg.stack_tasks and sum(1 for todo in todos if todo) > 1:
            return [[j, None, todos]], n  # one unit: every task's cells, the stackable turns stacked
        return units, n

    def finish(self, store: ResultsStore, skipped: list[dict]) -> dict:
        """(writer) Collect every posted cell, add each task's worst case, export; returns this run's row keys and
        the learners skipped on any rank."""
        store.collect()
        df = store.frame()
        by_cell: dict[tuple, list[int]] = {}
        for i, key in enumerate(cell_keys(df)):
            by_cell.setdefault(key, []).append(i)
        keep: list[str] = []
        radii = set(radius_grid(self.cfg.radii))
        for j, job in enumerate(self.jobs):
            note = self.world.noted("skip", j)
            if note is not None:
                skipped.append(note)
            identity = self.world.noted("identity", j)
            if identity is None:
                continue
            for t, (task, attacks) in enumerate(job.tasks):
                base = self.cell_base(j, t, identity)
                cells = []
                for attack, cell in zip(attacks, job.cells(t, base)):
                    key = cell_key({**cell, "radius": None})
                    rows = df.iloc[by_cell.get(key, [])]
                    rows = rows[rows["radius"].astype(float).isin(radii)]
                    keep += [row_key(r) for r in rows.to_dict("records")]
                    path = masks_path(self.out, cell, self.cfg.radii)
                    if len(rows) == len(radii) and path.is_file():
                        cells.append((attack, rows, load_masks(path)))
                if len(cells) < 2 or len(cells) < len(attacks) or note is not None:
                    continue
                first = cells[0][1].iloc[0].to_dict()
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                base = {**encoder_fields(first), "label": job.src.label, "timestamp": stamp}
                worst = worst_case_rows(base, cells, self.cfg.radii)
                for w in worst:
                    if w["warnings"]:
                        log.warning("%s / %s / radius %g: %s", identity["run"], task.name, w["radius"], w["warnings"])
                stored = stored_as(df, worst)
                if stored is None:  # a resume that computed nothing new keeps the stored rows, timestamps too
                    store.add(pd.DataFrame(worst))
                keep += [row_key(w) for w in worst]
        store.export()
        return {"keys": keep, "skipped": skipped}


def bench(config: BenchConfig | None = None, progress=False, *, strict: bool = True,
          world: World | None = None, force: bool = False, **overrides) -> pd.DataFrame:
    """Run a benchmark; returns its rows (this run's protocol, computed now or found finished in ``out``) as a
    DataFrame. ``<out>/results.sqlite`` (exported to ``<out>/results.csv``) holds every run's rows.

    Learners are resolved before any work (``robrep.encoders.resolve``). With ``strict`` (the
    default), an unknown name, a learner of the wrong type, or a learner that fails anywhere on
    its path (building, training, loading, encoding any batch, non-finite features, probing,
    attacking) raises ``UnknownNameError`` or ``robrep.LearnerError`` naming it; the rows of cells
    finished before stay in results.csv. With ``strict=False`` such a learner is logged and
    skipped, the rest of the run completes, and ``df.attrs["skipped"]`` lists each skip as a dict
    (learner, dataset, error).

    Launched by torchrun, every rank calls ``bench`` with the same arguments (``world`` defaults to
    ``World.current``); the work is shared out and every rank returns the same rows.

    Everything is checked before the first byte is written (``robrep.harness.preflight``): bad options, and an
    output folder holding files robrep did not write, raise ``ConfigError`` and leave the folder as it was;
    ``force=True`` writes beside such files (never over them).

    ``progress``: False (the default) is quiet; True logs a line per finished cell and per trained epoch at INFO
    on the ``robrep`` logger (``robrep.progress.LineProgress``; ``robrep.progress.show_progress()`` or the
    application's logging set-up shows them); or a
    ``robrep.progress.Progress`` (or any object with some of its methods: the CLI's progress bars).
    ``<out>/config.toml`` records the configuration.
    """
    given = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)} if config else {}
    cfg = BenchConfig.from_values({**given, **with_aliases(overrides)})
    if progress is True:
        progress = log_progress(log)
    elif progress is False:
        progress = None
    if cfg.threads is not None:
        use_threads(cfg.threads)
    out = Path(cfg.out)
    world = world or World.current(cfg.device)
    world.begin()
    try:
        with kept_random_state(cfg.device if torch.device(cfg.device).type == "cuda" else None):
            return _bench(cfg, out, world, progress, strict, force)
    except BaseException as e:
        world.fail(f"{type(e).__name__}: {e}")  # ranks waiting for this one stop now, on every node
        raise


bench.__signature__, _options = options_signature(bench, [
    inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None, annotation="BenchConfig | None"),
    inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False),
    inspect.Parameter("strict", inspect.Parameter.KEYWORD_ONLY, default=True, annotation="bool"),
    inspect.Parameter("world", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="World | None"),
    inspect.Parameter("force", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool"),
])
bench.__doc__ += _options


def _bench(cfg: BenchConfig, out: Path, world: World, progress, strict: bool, force: bool) -> pd.DataFrame:
    """validate -> plan -> skip what is finished -> execute (prepare, attack) -> record."""
    checked, skipped = _validate(cfg, world, strict, force)
    jobs, device = _plan(cfg, out, world, checked)
    progress = Progress.of(progress if world.is_writer else None)
    run = _Run(cfg, device, out, progress, world, jobs, strict)
    store = ResultsStore(out) if world.is_writer else None
    try:
        done = _finished(out, store, world)
        total = sum(job.n_cells for job in jobs)
        progress.cells(total)
        _prepare_all(run, done, store is not None)
        _attack_all(run, store)
        world.barrier("attacked")
        progress.completed(total)
        result = world.decide("result", lambda: run.finish(store, skipped))
        log.info("finished: %d row(s)", len(result["keys"]))
        if cfg.certify is not None and world.is_writer:  # the certified lower bounds beside the claims
            from robrep.certify.run import certify_run

            store.close()
            store = None
            certify_run(out, method=cfg.certify, device=cfg.device, data_root=cfg.data_root)
    finally:
        if store is not None:
            store.close()
    return _returned(out, result, world)


def _validate(cfg: BenchConfig, world: World, strict: bool, force: bool):
    """Everything checked before the first write (``preflight``); the learners skipped, as the run reports them."""
    if not world.is_writer:  # rank 0 loads first: it downloads, or decodes into the cache, once for all
        world.barrier("data")
    checked = preflight(cfg, folder="bench" if world.is_writer else None, force=force, strict=strict)  # no writes
    if world.is_writer:
        world.barrier("data")
    skipped = []
    for label, error in checked.skipped:
        log.error("learner %s skipped: %s", label, error)
        skipped.append({"learner": label, "dataset": "", "error": str(error)})
    if cfg.preprocessing is not None and world.is_writer:
        for src in checked.sources:
            if src.kind != "module":
                log.warning("preprocessing %r does not apply to %s: robrep learners take inputs in [0, 1]",
                            cfg.preprocessing, src.label)
    for ds in checked.datasets:
        _check_collisions(checked.sources, ds, cfg)
    return checked, skipped


def _plan(cfg: BenchConfig, out: Path, world: World, checked) -> tuple[list[Job], torch.device]:
    """The jobs, agreed on by every rank; the run folder made and the configuration recorded in it."""
    device = world.device(resolve_device(cfg.device))
    out.mkdir(parents=True, exist_ok=True)
    if world.is_writer:
        atomic_write(out / "config.toml", cfg.to_toml().encode())
    world.check_shared({"output folder": out, "cache": cache_dir()})
    jobs = make_jobs(cfg, checked.sources, checked.datasets)
    world.agree("jobs", [[job.src.label, job.src.kind, job.ds.name, job.n_cells] for job in jobs],
                "learners and data sets")
    return jobs, device


def _finished(out: Path, store: ResultsStore | None, world: World) -> dict:
    """What is finished, as the writer's store says when the run begins (after collecting what a killed run
    posted and adopting probes saved before probe records)."""
    if store is not None:
        store.collect()  # cells a killed run posted but never stored
        adopted = adopt_old_probes(out, store.frame())
        if adopted:
            log.info("%d probe(s) saved before probe records were adopted from the stored rows", adopted)
    return {tuple(k): set(r) for k, r in world.decide(
        "done", lambda: [[list(k), sorted(r)] for k, r in done_cells(store.frame()).items()])}


def _prepare_all(run: _Run, done: dict, writer: bool) -> None:
    """Prepare each job (jobs that train first: they take longest); its unfinished cells join the queue at once."""
    world, jobs, cfg = run.world, run.jobs, run.cfg
    order = world.decide("prepare", lambda: sorted(range(len(jobs)),
                                                    key=lambda j: not needs_training(jobs[j].src, jobs[j].ds, cfg)))
    log.info("prepare: %d job(s) (learner, data set) on %d process(es)", len(order), world.size)
    for i in world.units("prepare", len(order)):
        j, cells, n_todo = order[i], [], 0
        with run.guard(j):
            run.prepare(j)
            cells, n_todo = run.unfinished(j, done)
        if not run.skipped(j):
            world.count("finished", jobs[j].n_cells - n_todo)
            world.publish("cells", cells)
            log.info("%s on %s: %d cell(s) to run", jobs[j].src.label, jobs[j].ds.name, n_todo)
        world.count("prepared")
    if writer:
        run.progress.completed(world.count("finished", 0))  # cells found finished (a resumed run)


def _attack_all(run: _Run, store: ResultsStore | None) -> None:
    """Attack cells as they are published: a rank with no job left to prepare takes the next one."""
    world = run.world
    for j, t, todo in world.take("cells", closed=lambda: world.count("prepared", 0) >= len(run.jobs)):
        if not run.skipped(j):
            with run.guard(j):
                run.attack_tasks(j, todo) if t is None else run.attack(j, t, todo)
        attacked = world.count("attacked", sum(map(len, todo)) if t is None else len(todo))
        if store is not None:
            store.collect()
            store.export()
            run.progress.completed(world.count("finished", 0) + attacked)


def _returned(out: Path, result: dict, world: World) -> pd.DataFrame:
    """This run's rows, read back from results.csv; the robustness plot drawn from them."""
    everything = read_results(out / "results.csv")
    everything = everything if everything is not None else pd.DataFrame()
    wanted = set(result["keys"])
    df = everything[[row_key(r) in wanted for r in everything.to_dict("records")]].reset_index(drop=True) \
        if not everything.empty else everything
    df.attrs["invalid"] = everything.attrs.get("invalid", [])
    if not df.empty and world.is_writer:
        plot_robustness(df, out / "robustness.png")
    df.attrs["skipped"] = result["skipped"]  # learners reported and skipped, with their errors
    world.barrier("returned")
    return df


def _check_collisions(sources: list[EncoderSource], ds: Dataset, cfg: BenchConfig) -> None:
    """Two learners whose runs have one name on a data set would share their rows (robrep learners whose configs
    resolve to the same run) or their probe and image files (checkpoint folders with the same name): refuse
    them before anything is trained."""
    seen: dict[str, str] = {}
    for src in sources:
        if src.kind == "learner":
            try:
                _, _, run_dir = planned_run(src, ds, seed=cfg.seed, arch=cfg.arch, epochs=cfg.epochs)
            except Exception:  # noqa: BLE001  a config the learner refuses is reported when it is obtained
                continue
            run, why = run_dir.name, "their configs resolve to the same thing, so their rows would be one"
        elif src.kind == "checkpoint":
            run, why = Path(src.path).name, "checkpoint folders of one name would share their probe files"
        else:  # a module's run is named after its label
            run, why = f"{src.label} (a module)", "the same module under one label would share its files"
        if run in seen:
            raise ConfigError(f"learners {seen[run]!r} and {src.label!r} are the same run {run!r} on {ds.name}: "
                              f"{why}; give them different configs or folder names, or drop one")
        seen[run] = src.label


__all__ = ["bench", "run_cell"]
