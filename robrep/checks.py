"""The checks every attack result goes through before it counts (design/evaluation.md).

Check, don't assume: a broken attack, a leaky projection or a model that changes
between attack and evaluation shows up here, and is recorded in the result rows.
"""
from __future__ import annotations

import torch
from torch import nn

from robrep.attacks.base import TOL, AttackResult, perturbation_norm, predict


@torch.no_grad()
def check_result(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, result: AttackResult, norm: str, batch_size: int = 1000
) -> dict[float, dict[str, object]]:
    """Per radius: the checks (bools, the columns ``robrep.results.CHECK_COLUMNS``), the re-computed accuracy
    and the largest perturbation found.

    - ``check_radius0``: the accuracy at radius 0 equals the clean accuracy, re-computed here;
    - ``check_monotone``: the accuracy never rises with the radius;
    - ``check_in_ball``: every returned input is within the radius (+1e-6);
    - ``check_bounds``: every returned input is finite and inside [0, 1];
    - ``check_recomputed``: the decision re-computed on the returned inputs (model in eval mode)
      gives exactly the reported robust points;
    - ``check_valid_outputs``: the attack returned no input that failed validation (such inputs
      never count as adversarial, but a library that returns them is flagged).
    """
    model.eval()

    nominal = (predict(model, x, batch_size) == y).float().mean().item()
    out, prev = {}, float("inf")
    for r in result.radii:
        adv, robust = result.x_adv[r], result.robust[r]
        acc = robust.float().mean().item()
        dist = perturbation_norm(adv - x, norm)
        recomputed = predict(model, adv, batch_size) == y
        out[r] = {
            "check_radius0": bool(r > 0 or acc == nominal),
            "check_monotone": bool(acc <= prev),
            "check_in_ball": bool((dist <= r + TOL).all()),
            "check_bounds": bool(torch.isfinite(adv).all() and adv.min() >= 0 and adv.max() <= 1),
            "check_recomputed": bool(torch.equal(recomputed, robust)),
            "check_valid_outputs": result.rejected.get(r, 0) == 0,
            "n_rejected": result.rejected.get(r, 0),
            "recomputed_accuracy": recomputed.float().mean().item(),
            "max_perturbation": dist.max().item() if len(dist) else 0.0,
        }
        prev = acc
    return out

