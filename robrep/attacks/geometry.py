"""The geometry every attack and check shares: norms, balls and the input bounds.

A perturbation is measured in the attack's norm (``"linf"`` or ``"l2"``) over the whole input. The input
bounds are carried by the attacked model (``bounds_of``), never assumed. A returned input is admissible when
it is finite, inside the bounds and inside the ball, with a slack for float32 rounding (``ball_slack``).
"""
from __future__ import annotations

import torch

from robrep.rows.layout import NORMS, norm_name  # noqa: F401  (the threat models, and their spellings)

REL_TOL = 1e-5  # slack of the ball check, relative to the radius: float32 rounding of a projection onto the ball
ABS_TOL = 1e-7  # and absolute: float32 rounding of x + delta near 1


def ball_slack(eps: float) -> float:
    """How far past radius ``eps`` a returned input may lie (float32 rounding), in the attack's norm."""
    return REL_TOL * eps + ABS_TOL


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


def distance(a: torch.Tensor, b: torch.Tensor, norm: str, batch_dims: int = 1) -> torch.Tensor:
    """Per point, ||a - b|| in ``norm`` (``perturbation_norm`` of the difference, its one temporary reused: the
    Observer measures every query of an attack this way). The first ``batch_dims`` dimensions of the (broadcast)
    difference index points; the rest is one input."""
    flat = (a - b).flatten(batch_dims)
    return flat.abs_().amax(-1) if norm == "linf" else flat.norm(dim=-1)


def flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-point L2 norm of t, shaped to broadcast against t (N, 1, ...), never below 1e-12."""
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1)).clamp_min(1e-12)


def bounds_of(model) -> tuple[float, float]:
    """The input bounds the attacked model carries (``robrep.encoders.Encoder.bounds``, passed on by
    ``ProbedEncoder``); a bare module without them is refused rather than assumed to take [0, 1]."""
    bounds = getattr(model, "bounds", None)
    if bounds is None:
        raise TypeError(f"{type(model).__name__} carries no input bounds: attack a robrep.probes.ProbedEncoder "
                        "(or give the model a `bounds = (low, high)` attribute)")
    return bounds


def uniform_in_ball(x: torch.Tensor, eps: float, norm: str, gen,
                    bounds: tuple[float, float]) -> torch.Tensor:
    """x plus noise drawn uniformly from the ball of radius eps (L-inf: the cube; L2: uniform direction,
    radius eps * U^(1/D)), clipped to ``bounds``. Drawn on the CPU from ``gen``, so it is the same on any device.
    ``gen``: a ``torch.Generator``, or consecutive pieces of x, each with its own: a list of (generator, rows)
    (stacked cells, ``robrep.attacks.stacked``: each piece drawn as if it were attacked alone)."""
    if gen is not None and not isinstance(gen, torch.Generator):
        pieces, s = [], 0
        for g, n in gen:
            pieces.append(uniform_in_ball(x[s:s + n], eps, norm, g, bounds))
            s += n
        if s != len(x):
            raise ValueError(f"the generators' pieces cover {s} rows of {len(x)}")
        return torch.cat(pieces) if pieces else x.clone()
    if norm == "linf":
        delta = torch.empty(x.shape).uniform_(-eps, eps, generator=gen)
    else:
        delta = torch.randn(x.shape, generator=gen)
        r = torch.rand(x.shape[0], generator=gen) ** (1.0 / x[0].numel())
        delta = delta * (eps * r.view(-1, *[1] * (x.dim() - 1)) / flat_norm(delta))
    return (x + delta.to(x.device, x.dtype)).clamp(*bounds)


def admissible(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str,
               bounds: tuple[float, float]) -> torch.Tensor:
    """(n,) bool: x_adv is finite, inside ``bounds`` and inside the ball of radius eps around x (the guards)."""
    flat = x_adv.flatten(1)
    ok = (flat.amin(1) >= bounds[0]) & (flat.amax(1) <= bounds[1])  # NaN reaches the extremes and fails; inf fails
    return ok & (distance(x_adv, x, norm) <= eps + ball_slack(eps))


def ball_box(x: torch.Tensor, eps: float, norm: str, bounds: tuple[float, float]) -> tuple[torch.Tensor, ...]:
    """What ``project`` needs per point, computed once: for L-inf the box [max(x - eps, low), min(x + eps, high)]
    (the ball and the input bounds together: clamping to it equals clamping to the ball, then to the bounds);
    for L2 the centre x."""
    if norm == "linf":
        return (x - eps).clamp_(min=bounds[0]), (x + eps).clamp_(max=bounds[1])
    return (x,)


def project(x_adv: torch.Tensor, box: tuple[torch.Tensor, ...], eps: float, norm: str,
            bounds: tuple[float, float]) -> torch.Tensor:
    """x_adv moved into the ball of radius eps around its point (``box = ball_box(x, ...)``) and the bounds: for
    L2 the perturbation is scaled onto the ball, then clipped to the bounds. Under L-inf x_adv is clamped in place
    (callers pass the step they just computed)."""
    if norm == "linf":
        return x_adv.clamp_(*box)
    x = box[0]
    delta = x_adv - x
    delta = delta * (eps / flat_norm(delta)).clamp(max=1.0)
    return (x + delta).clamp(*bounds)
