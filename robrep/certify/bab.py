"""The complete method by branch and bound on the (leaky) ReLUs, over alpha-beta-CROWN bounds (Wang et al.,
Beta-CROWN, NeurIPS 2021; Xu et al., Fast and Complete, ICLR 2021), in batches of subdomains.

For one point and one margin ``logit_y - logit_j`` that the bounds left undecided: the ball is split on an
unstable unit z (one subdomain where z >= 0, one where z <= 0), and each subdomain is bounded again with that
unit exact (its interval cut at 0), the lower slopes of the other unstable units optimised (alpha) and the split
constraints s z >= 0 brought into the bound by Lagrange multipliers beta >= 0 (a term -beta s z, never positive
on the subdomain: every bound is sound for any alpha in [slope, 1] and beta >= 0, and the best one seen is
kept). A subdomain whose bound is positive is done; the rest are split again, the worst bounds first, on the
unit whose upper relaxation costs the bound most (the BaBSR score: the coefficient times the relaxation's
intercept). The margin is proven when no subdomain is left. Every bound also names an input: the corner of the
box (or the point of the L2 ball) where its linear function is smallest; if the model's decision changes there,
the point is broken with that input as its counterexample. A subdomain with every unstable unit split is one
where the network is affine: its margin's minimum is a linear program over the box and the splits' constraints
(HiGHS through SciPy; L-inf), exact: proven, or its minimiser is a counterexample. Time out or too many
subdomains: the point stays unknown.

The subdomains' intermediate bounds are the root's (alpha-CROWN), cut at the split units: sound, since each
subdomain lies in the root's ball. Works for L-inf and L2 balls (it only needs the bounds), ReLU and LeakyReLU
networks; the smooth activations have nothing to split and are refused.
"""
from __future__ import annotations

import time

import torch
from torch import nn

from robrep.certify.bounds import (ALPHA_LR, Activation, Affine, NotCertifiable, _activation_bounds, _backward, _Domain,
                                   _optimised, chain, margins)
from robrep.certify.complete import BROKEN, CERTIFIED, PROVEN, UNKNOWN, Decision

BATCH = 64  # subdomains split and bounded at once (each gives two)
STEPS = 15  # alpha-beta optimisation steps per batch
BETA_LR = 0.05
MAX_DOMAINS = 50_000  # subdomains kept at once; more and the margin stays unknown


def branch_and_bound(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, norm: str = "linf",
                     time_limit: float = 10.0, bounds: tuple[float, float] | None = None, points=None,
                     method: str = "alpha-crown") -> Decision:
    """Decide robustness at radius ``eps`` for the points ``points`` (indices into x; default all) within
    ``time_limit`` seconds per point (see the module docstring). Points the probe misclassifies unperturbed are
    BROKEN (the clean input is the counterexample). ``binaries`` of the result: each point's unstable units at
    the root (what a mixed-integer program would make binary). ``method``: the root's intermediate bounds,
    ``alpha-crown`` (tighter: fewer unstable units) or ``crown`` (cheaper on convolutions, bounded in patches)."""
    if method not in ("crown", "alpha-crown"):
        raise ValueError(f"branch and bound starts from crown or alpha-crown bounds, got {method!r}")
    n = len(x)
    status = torch.zeros(n, dtype=torch.int8)
    examples: list = [None] * n
    seconds, unstable = [0.0] * n, [0] * n
    chosen = range(n) if points is None else [int(i) for i in points]
    model = model.eval()
    ops = chain(model, tuple(x.shape[1:]))
    acts = [i for i, op in enumerate(ops) if isinstance(op, Activation)]
    if any(not ops[i].piecewise_linear for i in acts):
        raise NotCertifiable("branch and bound splits ReLU and LeakyReLU units; this network has smooth "
                             "activations (use the bounds alone)")
    box = bounds if bounds is not None else model.bounds
    for p in chosen:
        t0 = time.perf_counter()
        deadline = t0 + time_limit
        xp, yp = x[p:p + 1].double(), y[p:p + 1]
        with torch.no_grad():
            logits = model(x[p:p + 1])
        if logits.argmax(1).item() != yp.item():
            status[p], examples[p] = BROKEN, x[p].clone()
            continue
        dom = _Domain.of(xp, eps, norm, box)
        with torch.no_grad():
            layer_bounds, _, _ = _activation_bounds(ops, dom, method)
            spec = margins(ops[-1], yp)
            root = _optimised(ops[:-1], spec.weight, spec.bias, layer_bounds, dom)[0]
        unstable[p] = sum(int(((layer_bounds[i][0] < 0) & (layer_bounds[i][1] > 0)).sum()) for i in acts)
        verdict = CERTIFIED
        for j in root.argsort().tolist():  # the hardest margin first: it decides the point most often
            if j == yp.item() or root[j] > 0:
                continue
            verdict, example = _margin(model, ops, acts, spec.weight[:, j:j + 1], spec.bias[:, j:j + 1], yp,
                                       layer_bounds, dom, deadline, tuple(x.shape[1:]))
            if verdict != CERTIFIED:
                examples[p] = example
                break
        status[p], seconds[p] = verdict, time.perf_counter() - t0
    return Decision(status, examples, seconds, unstable)


def _margin(model, ops, acts, w, b, y, layer_bounds, dom: _Domain, deadline: float, shape):
    """Branch and bound on one margin (spec row w (1, 1, width), b (1, 1)) of one point: (verdict, example)."""
    pool = _Pool({i: torch.zeros(1, layer_bounds[i][0].shape[1], dtype=torch.int8) for i in acts}, {}, {})
    while True:
        lower, example, pool = _bound(model, ops, acts, w, b, y, layer_bounds, dom, pool, shape)
        if example is not None:
            return BROKEN, example
        pool = pool.where(lower <= 0, lower)  # the subdomains proven are done
        if not len(pool):
            return CERTIFIED, None
        if time.perf_counter() > deadline or 2 * len(pool) > MAX_DOMAINS:
            return UNKNOWN, None
        batch, rest = pool.worst(BATCH)
        leaves = batch.best_score() == -float("inf")  # every unstable unit split: the network is affine there
        for k in leaves.nonzero().flatten().tolist():
            verdict, example = _leaf(model, ops, acts, layer_bounds, {i: f[k] for i, f in batch.fix.items()}, w, b,
                                     dom, y, shape)
            if verdict != CERTIFIED:
                return verdict, example
        pool = batch.where(~leaves, batch.lower).split(acts).join(rest) if (~leaves).any() else rest
        if not len(pool):
            return CERTIFIED, None


class _Pool:
    """Subdomains of one point's ball for one margin: per activation index, each one's splits (M, width: +1
    active, -1 inactive, 0 free), its optimised alphas and betas (M, 1, width; inherited by its children), and
    after bounding its lower bound (M,) and split scores (M, width)."""

    def __init__(self, fix, alpha, beta, lower=None, score=None):
        self.fix, self.alpha, self.beta, self.lower, self.score = fix, alpha, beta, lower, score or {}

    def __len__(self):
        return len(next(iter(self.fix.values())))

    def _pick(self, rows) -> "_Pool":
        take = lambda d: {i: t[rows] for i, t in d.items()}  # noqa: E731
        return _Pool(take(self.fix), take(self.alpha), take(self.beta),
                     None if self.lower is None else self.lower[rows], take(self.score))

    def where(self, keep: torch.Tensor, lower: torch.Tensor) -> "_Pool":
        self.lower = lower
        return self._pick(keep.nonzero().flatten())

    def worst(self, k: int) -> tuple["_Pool", "_Pool"]:
        order = self.lower.argsort()
        return self._pick(order[:k]), self._pick(order[k:])

    def join(self, other: "_Pool") -> "_Pool":
        if not len(other):
            return self
        cat = lambda a, b: {i: torch.cat([a[i], b[i]]) for i in a}  # noqa: E731
        return _Pool(cat(self.fix, other.fix), cat(self.alpha, other.alpha), cat(self.beta, other.beta),
                     torch.cat([self.lower, other.lower]), cat(self.score, other.score))

    def _layer_best(self) -> torch.Tensor:
        """Per subdomain and activation layer (in ``acts`` order), its best split score (M, layers)."""
        return torch.stack([s.max(1).values for s in self.score.values()], 1)

    def best_score(self) -> torch.Tensor:
        return self._layer_best().max(1).values

    def split(self, acts) -> "_Pool":
        """Each subdomain in two on its best-scored unit: [all active children, all inactive children], each
        with its parent's alphas and betas (the new split's beta 0: it was 0 while the unit was free)."""
        n = len(self)
        best = self._layer_best().argmax(1)  # the layer, per subdomain (scores are kept in acts order)
        fix = {i: torch.cat([f, f]) for i, f in self.fix.items()}
        for k, i in enumerate(acts):
            mine = (best == k).nonzero().flatten()
            unit = self.score[i][mine].argmax(1)
            fix[i][mine, unit] = 1
            fix[i][mine + n, unit] = -1
        two = lambda d: {i: torch.cat([t, t]) for i, t in d.items()}  # noqa: E731
        lower = torch.cat([self.lower, self.lower])
        return _Pool(fix, two(self.alpha), two(self.beta), lower, two(self.score))


def _bound(model, ops, acts, w, b, y, layer_bounds, dom: _Domain, pool: _Pool, shape):
    """Bound every subdomain of ``pool``: (lower bounds (M,), a counterexample if one of their minimisers breaks
    the point, else None, the pool with its alphas, betas and split scores updated)."""
    n = len(pool)
    bounds = list(layer_bounds)
    for i in acts:
        lo, hi = layer_bounds[i]
        f = pool.fix[i]
        bounds[i] = (torch.where(f > 0, lo.clamp(min=0), lo), torch.where(f < 0, hi.clamp(max=0), hi))
    sub = _Domain(dom.x0.expand(n, -1), dom.lo.expand(n, -1), dom.hi.expand(n, -1), dom.eps, dom.norm)
    a0, c0 = w.expand(n, -1, -1), b.expand(n, -1)
    alphas, betas = {}, {}
    for i in acts:
        lo, hi = bounds[i]
        crown = torch.where(hi >= -lo, torch.ones_like(hi), torch.full_like(hi, ops[i].slope))[:, None, :]
        alphas[i] = pool.alpha.get(i, crown).detach().clone().requires_grad_(True)
        betas[i] = pool.beta.get(i, torch.zeros_like(crown)).detach().clone().requires_grad_(True)
    best = torch.full((n,), -float("inf"), dtype=torch.float64)
    best_a = torch.zeros(n, dom.x0.shape[1], dtype=torch.float64)
    opt = torch.optim.Adam([{"params": list(alphas.values()), "lr": ALPHA_LR},
                            {"params": list(betas.values()), "lr": BETA_LR}])
    signed = lambda: {i: betas[i] * pool.fix[i][:, None, :].to(betas[i].dtype) for i in acts}  # noqa: E731
    with torch.enable_grad():
        for step in range(STEPS + 1):
            seen: dict = {}  # the last pass's (no step follows it) gives the split scores
            a, c = _backward(ops[:-1], a0, c0, bounds, alphas, signed(), seen)
            value = sub.lower(a, c)[:, 0]
            better = value.detach() > best
            best = torch.where(better, value.detach(), best)
            best_a = torch.where(better[:, None], a.detach()[:, 0], best_a)
            if step == STEPS or (best > 0).all():
                break
            opt.zero_grad()
            (-value.sum()).backward()
            opt.step()
            with torch.no_grad():
                for i in acts:
                    alphas[i].clamp_(ops[i].slope, 1.0)
                    betas[i].clamp_(min=0)
    with torch.no_grad():
        example = _counterexample(model, best_a, sub, y, shape)
        score = {}
        for i in acts:
            lo, hi = bounds[i]
            open_ = (lo < 0) & (hi > 0) & (pool.fix[i] == 0)
            intercept = -lo * hi / torch.where(open_, hi - lo, torch.ones_like(hi))  # the upper line's at 0
            coeff = seen[i].detach()[:, 0]
            s = coeff.clamp(max=0).abs() * intercept * (1 - ops[i].slope) + 1e-9 * coeff.abs() * (hi - lo)
            score[i] = torch.where(open_, s, torch.full_like(s, -float("inf")))
    out = _Pool(pool.fix, {i: t.detach() for i, t in alphas.items()}, {i: t.detach() for i, t in betas.items()},
                best, score)
    return best, example, out


def _counterexample(model, a: torch.Tensor, dom: _Domain, y: torch.Tensor, shape):
    """The inputs where each subdomain's linear lower bound a x + c is smallest (a corner of the box; under L2
    the ball's point against a, within the input bounds); the first whose decision the model changes, or None."""
    if dom.norm == "linf":
        x = torch.where(a > 0, dom.lo, dom.hi)
    else:
        step = a / a.norm(dim=1, keepdim=True).clamp(min=1e-12)
        x = torch.minimum(torch.maximum(dom.x0 - dom.eps * step, dom.lo), dom.hi)
    x = x.to(next(model.parameters()).dtype).view(len(x), *shape)
    with torch.no_grad():
        wrong = (model(x).argmax(1) != y).nonzero().flatten()
    return None if not len(wrong) else x[wrong[0]]


def _leaf(model, ops, acts, layer_bounds, fix, w, b, dom: _Domain, y, shape):
    """A subdomain where every unit is stable or split: the margin is affine in x there, its minimum over the box
    and the splits' sign constraints one linear program. (verdict, example); an L2 ball is no polytope: unknown."""
    from scipy.optimize import linprog

    if dom.norm != "linf":
        return UNKNOWN, None
    m = torch.eye(dom.x0.shape[1], dtype=torch.float64)  # z = x m + v, layer by layer
    v = torch.zeros(dom.x0.shape[1], dtype=torch.float64)
    rows, limits = [], []
    for i, op in enumerate(ops[:-1]):
        if isinstance(op, Affine):
            m, v = m @ op.weight.T, v @ op.weight.T + op.bias
            continue
        lo, hi, f = layer_bounds[i][0][0], layer_bounds[i][1][0], fix[i]
        split = (f != 0).nonzero().flatten()
        sign = f[split].to(torch.float64)
        rows.append(-(m[:, split] * sign).T)  # s z >= 0, as -s (x m) <= s v
        limits.append(sign * v[split])
        on = (lo >= 0) | (f > 0)
        off = (hi <= 0) | (f < 0)
        if not (on | off).all():
            raise AssertionError("a leaf with an undecided unit")
        d = torch.where(on, torch.ones_like(lo), torch.full_like(lo, ops[i].slope))
        m, v = m * d, v * d
    cost = m @ w[0, 0]
    const = float(v @ w[0, 0] + b[0, 0])
    res = linprog(cost.numpy(), A_ub=torch.cat(rows).numpy() if rows else None,
                  b_ub=torch.cat(limits).numpy() if limits else None,
                  bounds=list(zip(dom.lo[0].tolist(), dom.hi[0].tolist())), method="highs")
    if res.status == 2:  # no input has these signs
        return CERTIFIED, None
    if res.status != 0:
        return UNKNOWN, None
    if res.fun + const > PROVEN:
        return CERTIFIED, None
    x = torch.as_tensor(res.x).clamp(dom.lo[0], dom.hi[0]).to(next(model.parameters()).dtype).view(1, *shape)
    with torch.no_grad():
        return (BROKEN, x[0]) if model(x).argmax(1).item() != y.item() else (UNKNOWN, None)
