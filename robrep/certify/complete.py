"""The complete method: for the points CROWN cannot decide, a mixed-integer linear program per margin (Tjeng,
Xiao, Tedrake, Evaluating Robustness of Neural Networks with Mixed Integer Programming, ICLR 2019), solved by
HiGHS through ``scipy.optimize.milp`` with a time limit per point.

probe∘encoder is read as the certifier's chain (``robrep.certify.bounds.chain``: dense affine maps between ReLU
or LeakyReLU layers). Each activation whose input bounds (from CROWN over the ball) straddle zero gets a binary
variable and the big-M constraints that make the program exact; stable ones are linear. The input domain is the
L-inf ball intersected with the input bounds, a box: the program is exact there. (An L2 ball is not a polytope:
the method is L-inf only.)

Per point, the margins ``logit_y - logit_j`` that CROWN left undecided are minimised one at a time, the most
negative CROWN bound first:

- a margin whose proven lower bound (the solver's dual bound, at optimality or at the time limit) exceeds a small
  tolerance is proven positive; a point whose every margin is proven is **certified**;
- a solution with a negative margin is checked by running the model on it (clipped into the ball and the bounds,
  in the model's own precision): if the model's decision changes, the point is **broken**, with that input as
  its counterexample (an adversarial example the attacks may have missed);
- otherwise (time out, a counterexample the model does not confirm) the point stays **unknown**.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from robrep.certify.bounds import (Activation, Affine, NotCertifiable, _activation_bounds, _Domain, _lower, chain,
                                   margins)

log = logging.getLogger(__name__)

# a margin is proven positive when the solver's lower bound exceeds this (HiGHS's feasibility tolerances are
# 1e-6 to 1e-7 on constraints whose big-M coefficients are the bounds, a few units on these networks)
PROVEN = 1e-4

CERTIFIED, BROKEN, UNKNOWN = 1, -1, 0


@dataclass
class Decision:
    """Per point: ``status`` CERTIFIED (1), BROKEN (-1) or UNKNOWN (0), the counterexample where broken (else
    None), the seconds spent, and the unstable activations (binary variables) of its program."""
    status: torch.Tensor  # (N,) int8
    counterexamples: list
    seconds: list
    binaries: list


def decide(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, time_limit: float = 10.0,
           bounds: tuple[float, float] | None = None, points=None, method: str = "crown") -> Decision:
    """Decide robustness exactly at L-inf radius ``eps`` for the points ``points`` (indices into x; default all),
    within ``time_limit`` seconds per point. ``method`` (``crown`` or ``alpha-crown``) gives the activations' input
    bounds (tighter bounds: fewer binaries) and the margins' bounds that order and skip the programs. Points the
    probe misclassifies unperturbed are BROKEN (the clean input is the counterexample)."""
    if method not in ("crown", "alpha-crown"):
        raise ValueError(f"the complete method starts from crown or alpha-crown bounds, got {method!r}")
    n = len(x)
    status = torch.zeros(n, dtype=torch.int8)
    examples: list = [None] * n
    seconds, binaries = [0.0] * n, [0] * n
    chosen = torch.arange(n) if points is None else torch.as_tensor([int(i) for i in points], dtype=torch.long)
    if not len(chosen):
        return Decision(status, examples, seconds, binaries)
    model = model.eval()
    x_c, y_c = x[chosen], y[chosen]  # the bounds of the chosen points only
    ops = chain(model, tuple(x.shape[1:]))
    dom = _Domain.of(x_c, eps, "linf", bounds if bounds is not None else model.bounds)
    spec = margins(ops[-1], y_c)
    with torch.no_grad():
        right = model(x_c).argmax(1) == y_c
        found = _activation_bounds(ops, dom, method)
        crown = _lower(ops, spec, dom, method, found)
    layer_bounds = found[0]
    for p, point in enumerate(chosen.tolist()):
        t0 = time.perf_counter()
        if not right[p]:
            status[point], examples[point] = BROKEN, x_c[p].clone()
            continue
        todo = [int(j) for j in torch.argsort(crown[p]) if j != y_c[p] and crown[p, j] <= 0]
        if not todo:  # the relaxation decided it
            status[point] = CERTIFIED
            continue
        program = _Program(ops, layer_bounds, dom, p)
        binaries[point] = program.n_binary
        proven, deadline = 0, t0 + time_limit
        for j in todo:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            res = program.minimise(spec.weight[p, j], float(spec.bias[p, j]), left)
            if res is None:
                break
            bound, solution = res
            if bound > PROVEN:
                proven += 1
                continue
            if solution is not None:
                adv = _confirmed(model, x_c[p], int(y_c[p]), solution, dom, p)
                if adv is not None:
                    status[point], examples[point] = BROKEN, adv
            break
        if proven == len(todo) and status[point] == UNKNOWN:
            status[point] = CERTIFIED
        seconds[point] = time.perf_counter() - t0
    return Decision(status, examples, seconds, binaries)


def _confirmed(model, x0: torch.Tensor, y: int, solution: np.ndarray, dom: _Domain, p: int):
    """The solver's input, clipped into the ball and the bounds and run through the model: the counterexample if
    the model's decision changes there, else None (a solution only the solver's tolerances made adversarial)."""
    v = torch.from_numpy(solution).to(dom.lo.dtype)
    v = torch.minimum(torch.maximum(v, dom.lo[p]), dom.hi[p])
    adv = v.reshape(x0.shape).to(x0.dtype)
    with torch.no_grad():
        pred = int(model(adv[None]).argmax(1))
    return adv if pred != y else None


class _Program:
    """The mixed-integer program of one point: variables x (the input), then per activation layer its outputs and
    the binaries of its unstable units; the constraints make every output equal to the activation of its input."""

    def __init__(self, ops, layer_bounds, dom: _Domain, p: int):
        from scipy import sparse

        lo_x, hi_x = dom.lo[p].numpy(), dom.hi[p].numpy()
        self.var_lo, self.var_hi, self.integer = [lo_x], [hi_x], [np.zeros(len(lo_x))]
        self.blocks, self.c_lo, self.c_hi = [], [], []  # constraint rows as (row, column, value) triples
        self.n_var, self.n_row, self.n_binary, self.n_input = len(lo_x), 0, 0, len(lo_x)
        prev = np.arange(len(lo_x))  # the variables of the previous layer's output
        for i in range(0, len(ops) - 1, 2):
            aff, act = ops[i], ops[i + 1]
            if not (isinstance(aff, Affine) and isinstance(act, Activation)):
                raise ValueError("the complete method expects affine maps and activations in turn")
            if not act.piecewise_linear:
                raise NotCertifiable(f"the complete method is exact for ReLU and LeakyReLU only, not {act.fn}")
            lo, hi = (t[p].numpy() for t in layer_bounds[i + 1])
            prev = self._layer(aff.weight.numpy(), aff.bias.numpy(), act.slope, lo, hi, prev)
        self.last = prev
        r, c, v = (np.concatenate(t) for t in zip(*self.blocks)) if self.blocks else ([], [], [])
        self.A = sparse.csr_array((v, (r, c)), shape=(self.n_row, self.n_var))
        self.c_lo, self.c_hi = np.concatenate([[]] + self.c_lo), np.concatenate([[]] + self.c_hi)
        self.var_lo, self.var_hi = np.concatenate(self.var_lo), np.concatenate(self.var_hi)
        self.integer = np.concatenate(self.integer)

    def _layer(self, w, b, s, lo, hi, prev):
        """Add one layer out = act(w prev + b), act(z) = max(z, s z), with input bounds [lo, hi]; returns the
        variables of its output."""
        width = len(b)
        out = np.arange(self.n_var, self.n_var + width)
        active, inactive = lo >= 0, hi <= 0
        unstable = ~(active | inactive)
        m = int(unstable.sum())
        delta = np.full(width, -1)
        delta[unstable] = np.arange(self.n_var + width, self.n_var + width + m)
        self.n_var += width + m
        self.n_binary += m
        act = lambda v: np.where(v >= 0, v, s * v)  # noqa: E731
        self.var_lo += [act(lo), np.zeros(m)]
        self.var_hi += [act(hi), np.ones(m)]
        self.integer += [np.zeros(width), np.ones(m)]

        def rows(units, scale, dcoef, lower, upper):
            """Rows  out_u - scale (w prev)_u + dcoef_u delta_u  in [lower, upper], one per unit of ``units``."""
            k = len(units)
            if not k:
                return
            r = np.arange(self.n_row, self.n_row + k)
            sub = -scale * w[units]
            rr, cc = np.nonzero(sub)
            self.blocks += [(r[rr], prev[cc], sub[rr, cc]), (r, out[units], np.ones(k))]
            if dcoef is not None:
                self.blocks.append((r, delta[units], dcoef))
            self.c_lo.append(np.broadcast_to(lower, k).astype(float))
            self.c_hi.append(np.broadcast_to(upper, k).astype(float))
            self.n_row += k

        u = np.nonzero(active)[0]
        rows(u, 1.0, None, b[u], b[u])  # out = z
        u = np.nonzero(inactive)[0]
        rows(u, s, None, s * b[u], s * b[u])  # out = s z
        u = np.nonzero(unstable)[0]
        rows(u, 1.0, None, b[u], np.inf)  # out >= z
        if s > 0:
            rows(u, s, None, s * b[u], np.inf)  # out >= s z (ReLU: out >= 0 is the variable's bound)
        # out <= z - (1 - s) lo (1 - delta): out = z when delta = 1
        rows(u, 1.0, -(1 - s) * lo[u], -np.inf, b[u] - (1 - s) * lo[u])
        # out <= s z + (1 - s) hi delta: out = s z when delta = 0
        rows(u, s, -(1 - s) * hi[u], -np.inf, s * b[u])
        return out

    def minimise(self, weight: torch.Tensor, bias: float, time_limit: float):
        """min weight . (last layer's output) + bias: (the proven lower bound, the input of the best solution
        found or None). None if the solver gave no bound at all."""
        from scipy.optimize import Bounds, LinearConstraint, milp

        c = np.zeros(self.n_var)
        c[self.last] = weight.numpy()
        res = milp(c, integrality=self.integer, bounds=Bounds(self.var_lo, self.var_hi),
                   constraints=LinearConstraint(self.A, self.c_lo, self.c_hi) if self.n_row else (),
                   options={"time_limit": max(time_limit, 0.01), "disp": False})
        bound = getattr(res, "mip_dual_bound", None)
        if res.status == 0 and bound is None:
            bound = res.fun
        if bound is None or not np.isfinite(bound):
            return None
        solution = None
        if res.x is not None and res.fun + bias < 0:
            solution = res.x[:self.n_input]
        return float(bound) + bias, solution
