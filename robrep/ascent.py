"""The inner maximisation of adversarial training: PGD on a per-example objective, L-inf or L2.

Used by the learners that train on attacked inputs (``supervised-at``: Madry et al. 2018; ``rocl``: an
instance-wise attack on the contrastive loss, Kim et al. 2020) and by the adversarially trained probe
(``robrep.probes.train_adversarial_probe``). The Smooth Encoder's selection (``robrep.learners.smooth``) is the
same loop on the representation's distance. Evaluation attacks live in ``robrep.attacks``, not here: they stop
at the first iterate that changes a decision and carry guards and evidence that training does not need. The
balls and their projections are ``robrep.attacks.geometry``'s.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from robrep.attacks.geometry import ball_box, flat_norm, project, uniform_in_ball


def ascent(objective: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, eps: float, steps: int,
           bounds: tuple[float, float], norm: str = "linf", step_size: float | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """The iterate of PGD in the ball of radius ``eps`` around x (and ``bounds``) with the largest ``objective``
    per example, detached: a uniform random start in the ball, ``steps`` steps of ``step_size`` (default
    2.5 eps / steps, Madry et al.) along the gradient's sign (L-inf) or direction (L2), each projected.
    ``objective(x_b)`` returns one value per example (N,); gradients are taken with respect to x_b only, so no
    parameter receives a gradient from the ascent. ``generator``: the random start's (default torch's global)."""
    step_size = 2.5 * eps / steps if step_size is None else step_size
    box = ball_box(x.detach(), eps, norm, bounds)
    gen = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
    x_b = uniform_in_ball(x.detach(), eps, norm, gen, bounds)
    best, best_value = x_b, torch.full((x.shape[0],), -math.inf, device=x.device)
    for i in range(steps + 1):
        with torch.enable_grad() if i < steps else torch.no_grad():
            x_b.requires_grad_(i < steps)
            value = objective(x_b)
            grad = torch.autograd.grad(value.sum(), x_b)[0] if i < steps else None
        with torch.no_grad():
            value = value.detach()
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_b.detach(), best)
            if grad is None:
                break
            direction = grad.sign() if norm == "linf" else grad / flat_norm(grad)
            x_b = project(x_b.detach() + step_size * direction, box, eps, norm, bounds)
    return best.detach()
