"""``robrep verify``: does a published number hold against an attack written independently of robrep's?

For every claim in a run folder's results.csv (the worst case of each task and radius, or every row of a
cell that has no worst case) it reloads the encoder (checkpoint integrity and SHA-256 checked) and the
saved probe (SHA-256 compared with the row), takes the same test points, and attacks them with
torchattacks' PGD (``PGD`` for L-inf, ``PGDL2`` for L2; random start, step 2.5 radius / steps, restarts as
separately seeded calls on the points no earlier call broke) on the cross-entropy; with ``margin`` (``--margin``,
and always for a standard board's admission), then, with three classes or more, torchattacks' APGD on the DLR
loss (a margin) on the points still robust: a point is robust only if every call's final input is classified
correctly. Two losses, so a number that only a cross-entropy attack would leave standing (where its gradients
mislead) does not hold: a cross-entropy PGD alone gives such numbers (robrep's PGD alternates the
cross-entropy and the margin by default for that reason). The published number holds if it is at most the
independent accuracy plus
``tolerance``: a published accuracy higher than an independent attack finds is an attack that was too weak
(or a number that was edited). An encoder robrep built without training it (a plugin's module, a
``module:attr``) has no checkpoint: it is built again from the spec, constructor arguments and preprocessing its
rows record, and used only if it is the same encoder (SHA-256); rows that record nothing to build from are
reported as not verifiable.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from robrep.progress import Progress
from robrep.rows.files import read_results
from robrep.rows.layout import ResultsError, row_key

log = logging.getLogger(__name__)

TOLERANCE = 0.01  # a published accuracy may exceed the independent one by this much (seed noise of two attacks)
GROUP = ["run", "dataset", "task", "label_fraction", "probe", "n_examples", "seed", "norm", "encoder_sha256",
         "probe_sha256"]


class VerifyError(ValueError):
    """A run folder cannot be verified (no results, a probe that does not match its rows); says why."""


@dataclass
class Verdict:
    key: str
    row: dict
    verified_accuracy: float | None
    holds: bool | None  # None: not verifiable
    note: str


def claims(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that claim a robustness number: each task's worst case, or every row of a cell without one."""
    cell = ["run", "dataset", "task", "label_fraction", "probe", "n_examples", "seed", "norm"]
    has_worst = df[df["suite"] == "worst-case"][cell].drop_duplicates()
    merged = df.merge(has_worst.assign(_worst=True), on=cell, how="left")
    keep = (merged["suite"] == "worst-case") | merged["_worst"].isna()
    return df[keep.to_numpy()]


def _attack(model, x, y, eps, norm, steps, restarts, seed, margin=True):
    """Per test point, whether it survived every call of both independent attacks: torchattacks' PGD on the
    cross-entropy (``restarts`` separately seeded calls) and, for three classes or more, torchattacks' APGD on the
    DLR loss (a margin: robust points where cross-entropy's gradients mislead fall to it). Raises VerifyError if a
    call did no work (fewer gradient passes than its steps, or no point moved), so a verdict rests on real attacks."""
    import torchattacks

    robust = model.predict(x) == y
    if eps == 0:
        return robust
    pgd = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    calls = [(f"PGD restart {k + 1}", lambda: pgd(model, eps=eps, alpha=2.5 * eps / steps, steps=steps,
                                                   random_start=True), seed * 7919 + k) for k in range(restarts)]
    n_classes = int(model(x[:1]).shape[1])
    if margin and n_classes >= 3:  # DLR needs the third-largest logit; with two it orders points as cross-entropy
        calls.append(("APGD-DLR", lambda: torchattacks.APGD(model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                                                             steps=steps, n_restarts=1, loss="dlr", seed=seed),
                      seed * 7919 + restarts))
    passes = [0]

    def count(module, inputs, output):  # forward passes the attack differentiates through
        passes[0] += torch.is_grad_enabled()

    hook = model.register_forward_hook(count)
    try:
        for what, build, call_seed in calls:
            idx = robust.nonzero().squeeze(1)
            if not len(idx):
                break
            torch.manual_seed(call_seed)  # torchattacks draws its random start from torch's global generator
            passes[0] = 0
            with torch.enable_grad():
                adv = build()(x[idx], y[idx])
            moved = (adv - x[idx]).flatten(1).abs().amax(1)
            # APGD returns the clean input of a point it did not break, so only its gradient passes tell its work
            if passes[0] < steps or not ((moved > 0).any() or what == "APGD-DLR"):
                raise VerifyError(f"the independent attack did no work at radius {eps:g} ({what}: "
                                  f"{passes[0]} gradient pass(es) for {steps} steps, largest move "
                                  f"{moved.max().item():.3g}): no verdict is recorded")
            robust[idx] &= model.predict(adv) == y[idx]
    finally:
        hook.remove()
    return robust


def _check_options(steps, restarts, tolerance) -> None:
    for name, value in (("steps", steps), ("restarts", restarts)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise VerifyError(f"{name} must be an integer >= 1 (or left out: the most the rows used), got {value!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not (
            math.isfinite(tolerance) and 0 <= tolerance < 1):
        raise VerifyError(f"tolerance must be a number in [0, 1) (how far a published accuracy may exceed the "
                          f"independent one), got {tolerance!r}")


def verify(out: str | Path, *, steps: int | None = None, restarts: int | None = None, tolerance: float = TOLERANCE,
           margin: bool = False,
           device: str = "cpu", data_root: str | Path | None = None, progress=None) -> list[Verdict]:
    """Verify the claims of run folder ``out`` (see the module docstring); returns one verdict per claim. Torch's
    global random state is left as it was (``robrep.rng``). ``progress``: a ``robrep.progress.Progress`` (its
    ``cells`` are the claims' groups, each a ``phase``)."""
    from robrep.rng import kept_random_state

    _check_options(steps, restarts, tolerance)
    with kept_random_state(device):
        return _verify(Path(out), steps, restarts, tolerance, device, data_root, Progress.of(progress), margin)


def _verify(out: Path, steps, restarts, tolerance, device, data_root, progress, margin) -> list[Verdict]:
    csv, folder, df = _claims_of(out)
    verdicts: list[Verdict] = []
    data: dict[str, object] = {}
    groups = list(claims(df).groupby(GROUP, dropna=False))
    progress.cells(len(groups))
    for n, (g, rows) in enumerate(groups):
        first = rows.iloc[0]
        progress.completed(n)
        progress.phase(f"{first['run']} / {first['dataset']} / {first['task']}", None)
        if first["dataset"] not in data:
            from robrep.data import load_dataset

            data[first["dataset"]] = load_dataset(first["dataset"], root=data_root)
        checkpoint = first.get("checkpoint")
        if isinstance(checkpoint, str) and checkpoint:
            model = attacked_model(folder, first, checkpoint, device)
        else:  # an encoder robrep never trained (a plugin's module, module:attr): built again from what it was
            model = rebuilt_model(folder, first, data[first["dataset"]], device)
        if model is None:
            verdicts += [Verdict(row_key(r), r, None, None, f"no checkpoint to reload ({r.get('source') or 'unknown'})")
                         for r in rows.to_dict("records")]
            continue
        cells = df[(df[GROUP[:-2]] == first[GROUP[:-2]]).all(axis=1)]
        budget = (steps if steps is not None else _most(cells, "steps", 100),
                  restarts if restarts is not None else _most(cells, "restarts", 10))
        verdicts += _judge(model, data[first["dataset"]], first, rows, budget, tolerance, device, margin)
    progress.completed(len(groups))
    progress.phase("done", None)
    _record(folder, csv, verdicts)
    return verdicts


def _claims_of(out: Path) -> tuple[Path, Path, pd.DataFrame]:
    """The results CSV of ``out`` (a run folder or the CSV itself), its folder and its valid rows."""
    if not out.exists():
        raise VerifyError(f"{out} does not exist: give a bench output folder (or its results.csv)")
    csv = out / "results.csv" if out.is_dir() else out
    folder = csv.parent
    if (folder / "results.sqlite").is_file() and csv == folder / "results.csv":  # the verdicts go into its store
        from robrep.folders import check_folder

        check_folder(folder, "bench", force=True, option="run folder")
    try:
        df = read_results(csv)
    except ResultsError as e:
        raise VerifyError(str(e)) from None
    if df is None or df.empty:
        raise VerifyError(f"{csv} holds no results to verify (run `robrep bench --out {folder}` first)")
    return csv, folder, df


def attacked_model(folder: Path, first, checkpoint: str, device):
    """The attacked model of a claim: its checkpoint and saved probe, each checked against the rows' SHA-256."""
    from robrep.checkpoint import load_checkpoint
    from robrep.encoders import Encoder

    path = Path(checkpoint)  # a submission's checkpoints travel with it: relative to its folder
    encoder = Encoder(load_checkpoint(path if path.is_absolute() else folder / path))
    if encoder.sha256() != first["encoder_sha256"]:
        raise VerifyError(f"the checkpoint {checkpoint} is not the encoder of its rows "
                          f"(SHA-256 {encoder.sha256()[:12]}, rows {first['encoder_sha256'][:12]})")
    return _with_probe(folder, first, encoder, device)


def rebuilt_model(folder: Path, first, ds, device):
    """The attacked model of a claim whose encoder robrep built without training it (no checkpoint): built again
    from the spec, constructor arguments and preprocessing its rows record, and refused unless it is the same
    encoder (SHA-256); None where the rows record no spec to build from."""
    import json

    from robrep.encoders.resolve import obtain, resolve

    try:
        config = json.loads(first.get("learner_config") or "{}")
    except (TypeError, ValueError):
        return None
    if not isinstance(config, dict) or not config.get("spec"):
        return None
    options = {"kwargs": config.get("kwargs") or {}}
    if config.get("preprocessing"):
        options["preprocessing"] = config["preprocessing"]
    try:
        src = resolve(config["spec"], {config["spec"]: options})  # a spec's options are keyed by the spec
        encoder = obtain(src, ds, seed=int(first["seed"]), device=torch.device(device)).encoder
    except Exception as e:  # noqa: BLE001 (a plugin that is not installed here, a module that moved)
        raise VerifyError(f"cannot build {config['spec']!r} again to verify its rows ({type(e).__name__}: {e})") \
            from None
    if encoder.sha256() != first["encoder_sha256"]:
        raise VerifyError(f"{config['spec']!r} built today is not the encoder of its rows (SHA-256 "
                          f"{encoder.sha256()[:12]}, rows {first['encoder_sha256'][:12]})")
    return _with_probe(folder, first, encoder, device)


def _with_probe(folder: Path, first, encoder, device):
    """``encoder`` under the claim's saved probe, the probe checked against the rows' SHA-256."""
    from robrep.io import sha256_bytes
    from robrep.probes import ProbedEncoder, load_probe, probe_file

    path = probe_file(folder, first["run"], first["dataset"], first["task"], float(first["label_fraction"]),
                      str(first.get("probe") or "standard"))
    if not path.is_file() or sha256_bytes(path.read_bytes()) != first["probe_sha256"]:
        raise VerifyError(f"{path} is missing or does not match the probe_sha256 of its rows")
    return ProbedEncoder(encoder, load_probe(path.read_bytes())).to(device).eval()


def _most(cells: pd.DataFrame, column: str, default: int) -> int:
    """The largest value the rows used (their attack budget), or ``default`` where none is recorded."""
    return int(cells[column].dropna().max()) if cells[column].notna().any() else default


def _judge(model, ds, first, rows: pd.DataFrame, budget: tuple[int, int], tolerance: float, device,
           margin: bool = False) -> list[Verdict]:
    """One verdict per claimed row: the independent attack at its radius (once per radius) against its number."""
    from robrep.harness.plan import claim_points

    n_steps, n_restarts = budget
    _, x, y = claim_points(ds, first, device)
    found: dict[float, float] = {}
    verdicts = []
    for r in rows.to_dict("records"):
        eps = float(r["radius"])
        if eps not in found:
            t0 = time.perf_counter()
            found[eps] = _attack(model, x, y, eps, r["norm"], n_steps, n_restarts, int(r["seed"]),
                                 margin).float().mean().item()
            log.info("%s / %s / radius %g: independent %.3f (%.0f s)", r["run"], r["task"], eps, found[eps],
                     time.perf_counter() - t0)
        acc, published = found[eps], float(r["adversarial_accuracy"])
        holds = published <= acc + tolerance
        tool = f"torchattacks {'PGD' if r['norm'] == 'linf' else 'PGDL2'} {n_steps}x{n_restarts}" + \
            (f" + APGD-DLR {n_steps}" if margin and int(r.get("n_classes") or 10) >= 3 else "")
        note = (f"{'held' if holds else 'DID NOT HOLD'}: independent {tool} {acc:.3f}, published {published:.3f}, "
                f"tolerance {tolerance:g} (robrep verify, {time.strftime('%Y-%m-%d')})")
        verdicts.append(Verdict(row_key(r), r, acc, holds, note))
    return verdicts


def _record(folder: Path, csv: Path, verdicts: list[Verdict]) -> None:
    """Write the verdicts into the run's ``verified`` column (store and CSV; ``robrep.harness.store.amend``)."""
    from robrep.harness.store import amend

    amend(folder, csv, [(v.key, v.row["adversarial_accuracy"], {"verified": v.note}) for v in verdicts
                        if v.holds is not None])


