"""``robrep certify RUN``: the certified lower bound beside every claimed upper bound of a finished run.

For each claim of the run (each task's worst case, or the rows of a cell without one; as ``robrep verify`` picks
them) it reloads the encoder and the saved probe (both checked against the rows' SHA-256), takes the same test
points and certifies each at every radius of the claim (``robrep.certify.bounds``). Before anything is written,
the certificate is checked against the run's own attacks: a point certified robust that an attack broke is a
broken certifier (or attack), and the command stops with the point named. Otherwise every claimed row gets
``certified_accuracy`` (the certified share of its test points: robust accuracy lies between it and
``adversarial_accuracy``) and ``certified_by`` (the method and date), and the certified points are saved beside
the attacks' masks (``examples/<run>/<data set>-<task>/certified--<method>.safetensors``).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pandas as pd
import torch

from robrep.certify.bounds import certified, chain

log = logging.getLogger(__name__)

SOLVERS = ("bab", "milp")  # the complete method's: branch and bound, or a mixed-integer program


class CertifyError(ValueError):
    """A run cannot be certified, or its certificate contradicts its attacks; says which point and radius."""


def certify_run(out: str | Path, *, method: str = "crown", device: str = "cpu", data_root=None,
                batch_size: int = 100, complete: float | None = None, solver: str = "bab",
                complete_radii=None) -> pd.DataFrame:
    """Certify every claim of run folder ``out`` (see the module docstring); returns the claimed rows with
    ``certified_accuracy`` filled in. Encoders the certifier cannot bound raise ``NotCertifiable``.

    ``complete``: seconds per point for the complete method on the points the attacks left robust and the bounds
    did not certify; what it proves joins the certified share, and a point it breaks that the attacks missed is
    counted in the note (the attacked number is then too high). ``solver``: ``bab`` (branch and bound over
    alpha-beta-CROWN bounds, ``robrep.certify.bab``; L-inf and L2) or ``milp`` (a mixed-integer program per
    margin, ``robrep.certify.complete``; L-inf only). ``complete_radii``: only at these of the run's radii (default
    every one; the method costs seconds per open point, and the open points are many at the larger radii)."""
    from robrep.certify.bounds import _check
    from robrep.data import load_dataset
    from robrep.verify import GROUP, _claims_of, attacked_model, claims

    _check(method, "linf")
    if complete is not None and not complete > 0:
        raise CertifyError(f"--complete takes the seconds per point, a positive number; got {complete:g}")
    if complete is not None and method == "ibp":
        raise CertifyError("the complete method starts from crown or alpha-crown bounds, not ibp")
    csv, folder, df = _claims_of(Path(out))
    if solver not in SOLVERS:
        raise CertifyError(f"the complete method's solver is one of {', '.join(SOLVERS)}, not {solver!r}")
    if complete_radii is not None:
        if complete is None:
            raise CertifyError("--complete-radii says where the complete method runs: give --complete SECONDS too")
        own = sorted({float(r) for r in df["radius"]})
        wrong = [r for r in complete_radii if not _among(float(r), own)]
        if wrong:
            raise CertifyError(f"--complete-radii {', '.join(f'{r:g}' for r in wrong)}: not a radius of this run "
                               f"(its radii: {', '.join(f'{r:g}' for r in own)})")
    if complete is not None and solver == "milp" and set(df["norm"]) != {"linf"}:
        raise CertifyError(f"the mixed-integer program is L-inf only (the L2 ball is not a polytope); this run has "
                           f"{', '.join(sorted(set(df['norm'])))}: use --solver bab, or certify without --complete")
    updated, data = [], {}
    for _, rows in claims(df).groupby(GROUP, dropna=False):
        first = rows.iloc[0]
        checkpoint = first.get("checkpoint")
        if not isinstance(checkpoint, str) or not checkpoint:
            raise CertifyError(f"{first['run']}: no checkpoint to reload ({first.get('source') or 'unknown'})")
        model = attacked_model(folder, first, checkpoint, device)
        if first["dataset"] not in data:
            data[first["dataset"]] = load_dataset(first["dataset"], root=data_root)
        updated.append(_certify_group(folder, df, rows, model, data[first["dataset"]], method, device, batch_size,
                                      complete, solver, complete_radii))
    result = pd.concat(updated, ignore_index=True)
    _record(folder, csv, result)
    return result


def _among(eps: float, radii) -> bool:
    """Whether radius ``eps`` is one of ``radii`` (None: every radius)."""
    return radii is None or any(abs(eps - float(r)) <= 1e-12 for r in radii)


def _decide_open(model, x, y, eps, first, open_, sure, exact, complete, solver, method, attacked_idx):
    """Run the complete method on the ``open_`` points; mark what it certifies in ``sure``, tally into ``exact``.

    ``attacked_idx`` (the test indices, where the run kept attack masks) turns a broken point into a warning: every
    attack of the run had missed it."""
    from robrep.certify.bab import branch_and_bound
    from robrep.certify.complete import BROKEN, CERTIFIED, decide

    points = open_.nonzero().flatten()
    if not len(points):
        return
    if solver == "bab":
        d = branch_and_bound(model.cpu(), x.cpu(), y.cpu(), eps, norm=first["norm"], time_limit=complete,
                             points=points, method=method)
    else:
        d = decide(model.cpu(), x.cpu(), y.cpu(), eps, time_limit=complete, points=points, method=method)
    model.to(x.device)  # the solvers run on the CPU
    status = d.status[points]
    sure[points[status == CERTIFIED]] = True
    broken = points[status == BROKEN]
    exact["open"] += len(points)
    exact["certified"] += int((status == CERTIFIED).sum())
    exact["broken"] += len(broken)
    if attacked_idx is not None and len(broken):
        exact["missed"] += len(broken)
        log.warning("%s / %s at radius %g: the complete method broke test point(s) %s that every attack of the run "
                    "left robust: the attacked number is too high", first["run"], first["task"], eps,
                    attacked_idx[broken].tolist()[:5])


def _certify_group(folder: Path, df, rows, model, ds, method, device, batch_size, complete=None,
                   solver="bab", complete_radii=None) -> pd.DataFrame:
    from robrep.harness.plan import claim_points
    from robrep.rows.masks import attacked_robust, certified_path, save_masks

    first = rows.iloc[0]
    radii = sorted(set(float(r) for r in df[(df["run"] == first["run"]) & (df["task"] == first["task"])]["radius"]))
    idx, x, y = claim_points(ds, first, device)
    robust = attacked_robust(folder, df, first, radii)
    sure = torch.zeros(len(radii), len(x), dtype=torch.bool)
    t0 = time.perf_counter()
    exact = {"open": 0, "certified": 0, "broken": 0, "missed": 0}  # the complete method's tally
    ops = chain(model, tuple(x.shape[1:]))  # the same for every radius
    for i, eps in enumerate(radii):
        # a point is certified at a radius only where it is at every smaller one of the run: robustness is
        # monotone in the radius, claiming fewer points keeps a lower bound, and the bounds then run only on the
        # points still certified (the attacks' masks play no part in choosing them: the check below stays a check)
        candidates = torch.ones(len(x), dtype=torch.bool) if i == 0 else sure[i - 1].clone()
        if candidates.any():
            with torch.no_grad():
                sure[i, candidates] = certified(model, x[candidates.to(x.device)], y[candidates.to(y.device)], eps,
                                                first["norm"], method, batch_size, ops=ops).cpu()
        if complete is not None and eps > 0 and _among(eps, complete_radii):
            # the candidates the attacks left robust (all, where the run kept no masks) the bounds did not decide
            open_ = candidates & ~sure[i] if robust is None else candidates & robust[i] & ~sure[i]
            _decide_open(model, x, y, eps, first, open_, sure[i], exact, complete, solver, method,
                         idx if robust is not None else None)
        if robust is not None:
            broken = sure[i] & ~robust[i]
            if broken.any():
                raise CertifyError(f"{first['run']} / {first['task']} at radius {eps:g}: test point(s) "
                                   f"{idx[broken.nonzero().flatten()].tolist()[:5]} certified robust but broken by an "
                                   "attack of the run: the certificate is unsound (nothing was written)")
    seconds = time.perf_counter() - t0
    name = method if complete is None else f"{method}+{solver}"
    detail = "" if complete is None else (
        f"; complete method at {complete:g} s/point"
        + ("" if complete_radii is None else f" at radius {', '.join(f'{float(r):g}' for r in sorted(complete_radii))}")
        + f" decided {exact['certified'] + exact['broken']} of "
        f"{exact['open']} open points: {exact['certified']} certified, {exact['broken']} broken"
        + (f" ({exact['missed']} that every attack missed)" if exact["missed"] else ""))
    note = f"{name} (robrep certify, {time.strftime('%Y-%m-%d')}, {seconds:.0f} s{detail})"
    path = certified_path(folder, first["run"], first["dataset"], first["task"], name)
    save_masks(path, radii, {"robust": sure}, idx)
    share = {eps: sure[i].float().mean().item() for i, eps in enumerate(radii)}
    log.info("%s / %s: certified %s (%s)", first["run"], first["task"],
             ", ".join(f"{share[r]:.3f} at {r:g}" for r in radii), note)
    return rows.assign(certified_accuracy=[share[float(r)] for r in rows["radius"]], certified_by=note)


def _record(folder: Path, csv: Path, rows: pd.DataFrame) -> None:
    """Write the certified columns into the run's store and CSV (``robrep.harness.store.amend``)."""
    from robrep.harness.store import amend
    from robrep.rows.layout import row_key

    amend(folder, csv, [(row_key(r), r["adversarial_accuracy"], {"certified_accuracy": r["certified_accuracy"],
                                                                  "certified_by": r["certified_by"]})
                        for r in rows.to_dict("records")])
