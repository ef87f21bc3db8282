"""The checks every attack row records: evidence that the attack worked, each of
which fails on a broken attack or model (tests/attacks/test_checks.py breaks one on purpose for each).

- ``check_noise_floor``: the adversarial accuracy is no higher than the accuracy under random noise in
  the same ball (``NOISE_DRAWS`` uniform draws per point; a point survives noise if every draw is
  classified correctly). An attack weaker than noise is broken.
- ``check_converged``: few points were first broken late, i.e. in the last fifth of the attack's model
  calls (``robrep.attacks.base.LATE``) or in its last restart: at most ``LATE_MAX`` of the test points, so
  the accuracy would move by about that much with more budget. Otherwise more steps or restarts would
  change the answer. Not measured for single-step attacks. For the worst case, a point counts as late
  only if every attack that broke it broke it late (``robrep.rows.worst_case_rows``).
- ``check_explored``: of the points counted robust, at least ``EXPLORED_MIN`` had a query that reached
  ``robrep.attacks.base.REACH`` of the radius, in the attack's norm (seen by the ``Observer``, not taken
  from the attack), or the unexplored ones are at most ``LATE_MAX`` of the test points (they can overstate
  the accuracy by no more than that). An attack that never leaves x is caught.
- ``check_guards``: the attack returned no input that the guards rejected (not finite, outside [0, 1],
  outside the ball, or not misclassified when the decision is re-computed); such inputs never count as
  adversarial, and ``n_rejected`` counts them. An input on the decision boundary that the attack's own
  batch decided otherwise is not a rejection (``robrep.attacks.base.decide``); its point stays robust.
- ``check_consistent``: the decision re-computed on the stored inputs gives exactly the reported robust
  points, and radius 0 gives the clean accuracy (catches a model that changes between attack and
  evaluation: dropout left on, nondeterminism).

A check that does not apply (radius 0, nothing attacked) is None and does not fail the row.
"""
from __future__ import annotations

import json

import torch
from torch import nn

from robrep.attacks.base import LATE, REACH, AttackResult, predict, radius_seed
from robrep.attacks.geometry import bounds_of, distance, uniform_in_ball
from robrep.rows.layout import EXPLORED_MIN, LATE_MAX

NOISE_DRAWS = 4

THRESHOLDS = json.dumps({
    "noise_floor": f"adversarial accuracy <= accuracy under {NOISE_DRAWS} uniform draws in the ball per point",
    "converged": f"<= {LATE_MAX} of test points first broken after {LATE} of the attack's model calls "
                 "or in its last restart (worst case: broken only so by every attack that broke them)",
    "explored": f">= {EXPLORED_MIN} of robust points had a query reaching {REACH} of the radius, "
                f"or the others are <= {LATE_MAX} of test points",
    "guards": "no returned input rejected (finite, in [0, 1], in the ball, misclassified)",
    "consistent": "re-computed decisions equal the reported robust points; radius 0 equals clean accuracy",
}, sort_keys=True)


@torch.no_grad()
def noise_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, seed: int,
                   batch_size: int = 1000) -> float:
    """Accuracy under random noise in the ball: a point counts if it is classified correctly under each of
    ``NOISE_DRAWS`` uniform draws (seeded by the radius, so every attack of a cell sees the same draws)."""
    gen = torch.Generator().manual_seed(radius_seed(seed, eps) ^ 0x5EED)
    ok = predict(model, x, batch_size) == y
    if eps > 0:
        for _ in range(NOISE_DRAWS):
            ok &= predict(model, uniform_in_ball(x, eps, norm, gen, bounds_of(model)), batch_size) == y
    return ok.float().mean().item()


@torch.no_grad()
def check_result(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, result: AttackResult, norm: str, seed: int,
    batch_size: int = 1000, prior: AttackResult | None = None,
) -> dict[float, dict[str, object]]:
    """Per radius: the checks (the columns ``robrep.rows.CHECK_COLUMNS``; True, False or None), the numbers
    they judge, the re-computed accuracy and the largest perturbation found. ``prior``: in a cascade, the
    result before this attack; the points it broke were re-computed by their own attack's check, and count
    as broken here."""
    model.eval()
    nominal = (predict(model, x, batch_size) == y).float().mean().item()
    out = {}
    for r in result.radii:
        adv, robust = result.x_adv[r], result.robust[r]
        acc = robust.float().mean().item()
        dist = distance(adv, x, norm)
        recomputed = predict(model, adv, batch_size) == y
        if prior is not None:
            recomputed &= prior.robust[r].to(recomputed.device)
        noise = noise_accuracy(model, x, y, r, norm, seed, batch_size)
        ev = result.evidence.get(r)
        late = explored = last_restart = None
        unexplored_ok = True
        if ev is not None and ev.n_attacked:
            if ev.measured_late:  # as shares of all test points: how far the accuracy could still move
                late = ev.n_late / len(x)
                if ev.n_last_restart is not None:
                    last_restart = ev.n_last_restart / len(x)
            if ev.n_robust:
                explored = ev.n_explored / ev.n_robust
                # unexplored robust points may overstate the accuracy: fine if few (relative or absolute)
                unexplored_ok = ev.n_robust - ev.n_explored <= max((1 - EXPLORED_MIN) * ev.n_robust, LATE_MAX * len(x))
        out[r] = {
            "noise_accuracy": noise,
            "late_share": late,
            "last_restart_share": last_restart,
            "explored_share": explored,
            "check_noise_floor": bool(acc <= noise),
            "check_converged": None if late is None else bool(max(late, last_restart or 0.0) <= LATE_MAX),
            "check_explored": None if explored is None else bool(unexplored_ok),
            "check_guards": result.rejected.get(r, 0) == 0,
            "check_consistent": bool(torch.equal(recomputed, robust) and (r > 0 or acc == nominal)),
            "n_rejected": result.rejected.get(r, 0),
            "recomputed_accuracy": recomputed.float().mean().item(),
            "max_perturbation": dist.max().item() if len(dist) else 0.0,
            "check_thresholds": THRESHOLDS,
        }
    return out
