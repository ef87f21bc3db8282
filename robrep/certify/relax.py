"""Linear relaxations of elementwise activations: for input bounds [lo, hi] per unit, a line below and a line
above the activation over the whole interval (CROWN's, Zhang et al. 2018).

- ReLU and LeakyReLU (piecewise linear, ``fn = "leaky"``): exact where the unit is stable; where it straddles
  zero the chord above and, below, the identity or the negative side's slope, whichever is tighter (the lower
  slope is what alpha-CROWN optimises, and what the complete method makes exact with a binary variable).
- Softplus and ELU with alpha <= 1 (convex): the chord above, the tangent at the midpoint below.
- Sigmoid and Tanh (S-shaped: convex below 0, concave above, symmetric about their centre): in the convex part
  the chord above and a tangent below, in the concave part the reverse; an interval that straddles 0 is bounded
  above by the line through (lo, f(lo)) tangent to the concave part (its tangent point found by bisection, kept
  on the side where the line stays above f(lo)), or by the chord where that line would not touch the concave
  part, and below by the same construction mirrored through the centre.

Every line is computed in float64 and moved outwards by ``SLACK`` to cover rounding. Each relaxation is tested
against the function on dense grids of random intervals.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

SLACK = 1e-9
KINDS = ("leaky", "softplus", "elu", "sigmoid", "tanh")


@dataclass(frozen=True)
class Activation:
    fn: str  # one of KINDS; "leaky" with slope 0 is the ReLU
    slope: float = 0.0  # leaky: the negative side's slope
    param: float = 1.0  # softplus: beta; elu: alpha

    @property
    def piecewise_linear(self) -> bool:
        return self.fn == "leaky"

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if self.fn == "leaky":
            return torch.where(v >= 0, v, self.slope * v)
        if self.fn == "softplus":
            return torch.nn.functional.softplus(v * self.param) / self.param  # the smooth function, no threshold
        if self.fn == "elu":
            return torch.where(v > 0, v, self.param * torch.expm1(v.clamp(max=0)))
        return torch.sigmoid(v) if self.fn == "sigmoid" else torch.tanh(v)

    def derivative(self, v: torch.Tensor) -> torch.Tensor:
        if self.fn == "softplus":
            return torch.sigmoid(v * self.param)
        if self.fn == "elu":
            return torch.where(v > 0, torch.ones_like(v), self.param * torch.exp(v.clamp(max=0)))
        if self.fn == "sigmoid":
            s = torch.sigmoid(v)
            return s * (1 - s)
        if self.fn == "tanh":
            return 1 - torch.tanh(v) ** 2
        raise ValueError(f"{self.fn} has no derivative here")

    @property
    def centre(self) -> float:
        """S-shaped: f(x) + f(-x) = 2 * centre."""
        return 0.5 if self.fn == "sigmoid" else 0.0


def activation_of(layer: nn.Module) -> Activation | None:
    """The relaxable activation ``layer`` is, or None if it is none (a layer the certifier may still read as
    affine). An ELU with alpha above 1 (not convex) or a Softplus with another threshold than its default is
    refused by the caller as any unknown layer."""
    if isinstance(layer, nn.ReLU):
        return Activation("leaky", 0.0)
    if isinstance(layer, nn.LeakyReLU):
        return Activation("leaky", float(layer.negative_slope))
    if isinstance(layer, nn.Softplus) and layer.threshold >= 20:
        return Activation("softplus", param=float(layer.beta))
    if isinstance(layer, nn.ELU) and 0 <= layer.alpha <= 1:
        return Activation("elu", param=float(layer.alpha))
    if isinstance(layer, nn.Sigmoid):
        return Activation("sigmoid")
    if isinstance(layer, nn.Tanh):
        return Activation("tanh")
    return None


def relax(lo: torch.Tensor, hi: torch.Tensor, op: Activation):
    """Lines below and above ``op`` on [lo, hi] per unit: (upper slope, upper intercept, lower slope, lower
    intercept); for the leaky kind the lower intercept is 0 and the lower slope CROWN's adaptive choice."""
    if op.fn == "leaky":
        return _leaky(lo, hi, op.slope)
    if op.fn in ("softplus", "elu"):
        up = _chord(op, lo, hi)
        low = _tangent(op, (lo + hi) / 2)
    else:
        up = _s_upper(op, lo, hi)
        a, b = _s_upper(op, -hi, -lo)  # f(x) = 2 c - f(-x) >= 2 c - (a (-x) + b)
        low = (a, 2 * op.centre - b)
    return up[0], up[1] + SLACK, low[0], low[1] - SLACK


def _leaky(lo, hi, slope):
    unstable = (lo < 0) & (hi > 0)
    denom = torch.where(unstable, hi - lo, torch.ones_like(hi))
    up_slope = torch.where(unstable, (hi - slope * lo) / denom, torch.where(hi <= 0, torch.full_like(hi, slope),
                                                                         torch.ones_like(hi)))
    up_bias = torch.where(unstable, lo * (slope - up_slope), torch.zeros_like(hi))
    adaptive = torch.where(hi >= -lo, torch.ones_like(hi), torch.full_like(hi, slope))  # the tighter of the two
    low_slope = torch.where(unstable, adaptive, up_slope)
    return up_slope, up_bias, low_slope, torch.zeros_like(hi)


def _chord(op, lo, hi):
    """The chord from (lo, f(lo)) to (hi, f(hi)); a point interval: the tangent there."""
    wide = hi - lo > 1e-12
    f_lo, f_hi = op(lo), op(hi)
    slope = torch.where(wide, (f_hi - f_lo) / torch.where(wide, hi - lo, torch.ones_like(hi)), op.derivative(lo))
    return slope, f_lo - slope * lo


def _tangent(op, at):
    d = op.derivative(at)
    return d, op(at) - d * at


def _s_upper(op, lo, hi, steps: int = 60):
    """A line above an S-shaped ``op`` on [lo, hi] (module docstring)."""
    chord, tangent_mid = _chord(op, lo, hi), _tangent(op, (lo + hi) / 2)
    f_lo = op(lo)

    def above_lo(d):  # the tangent at d, evaluated at lo, minus f(lo): >= 0 where that line clears (lo, f(lo))
        return op(d) + op.derivative(d) * (lo - d) - f_lo

    straddle = (lo < 0) & (hi > 0)
    # straddling: bisection on [0, hi] for the tangent through (lo, f(lo)), keeping the end where it clears it
    left, right = torch.zeros_like(hi), hi.clamp(min=0)
    touches = straddle & (above_lo(right) > 0)
    for _ in range(steps):
        mid = (left + right) / 2
        up = above_lo(mid) >= 0
        right, left = torch.where(up, mid, right), torch.where(up, left, mid)
    tangent = _tangent(op, right)
    slope = torch.where(hi <= 0, chord[0], torch.where(lo >= 0, tangent_mid[0],
                                                       torch.where(touches, tangent[0], chord[0])))
    bias = torch.where(hi <= 0, chord[1], torch.where(lo >= 0, tangent_mid[1],
                                                      torch.where(touches, tangent[1], chord[1])))
    return slope, bias
