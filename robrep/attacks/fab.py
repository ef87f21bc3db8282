"""robrep's targeted FAB (Croce and Hein 2020, "Minimally distorted adversarial examples with a fast adaptive
boundary attack"), L-inf and L2, as AutoAttack's standard version runs it: one run per target (the classes with
the largest clean logits other than the true one), no random start, with every target of a point in one batch.

The published algorithm as its implementations run it (fra31/auto-attack's ``fab_pt.py``, torchattacks' ``FAB``):
at each iteration the decision boundary between the true class and the target is linearised at the iterate, the
iterate and the clean point are both projected onto that hyperplane within the input box (``project_linf``,
``project_l2``), and the next iterate is the extrapolated (``eta``) convex combination of the two projections,
weighted towards the clean point by ``alpha`` (at most ``alpha_max``); an iterate that is misclassified is kept if
it is the smallest perturbation so far and pulled back towards the clean point by ``beta``.

What differs is the schedule of the work, never the algorithm's arithmetic: each (point, target) is a row of one
batch and all rows step together; the model's pass at the new iterate both decides whether it is misclassified
and gives the next step's gradient (the implementations query the model twice per iteration: once for the
decision, once more for the gradient at the same input; a row pulled back after a success is evaluated again);
and a point leaves the batch, with all its rows, as soon as one of its iterates is misclassified inside the ball
(the implementations keep shrinking a found perturbation to the end of the run, which cannot change whether the
point is broken at this radius). The projections compute what the implementations' compute, operation for
operation (``tests/attacks/test_fab.py`` compares them bit for bit), without the copies of rows that all need
the same case.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from robrep.attacks.apgd import first_per_point
from robrep.attacks.base import Attack, Progress
from robrep.attacks.geometry import bounds_of
from robrep.attacks.observer import expect

MAX_ROWS = 8192  # rows (points x targets) stepped together; more points are attacked in chunks


def _where_all(mask: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """t[mask], without the copy when every row is selected (the usual case)."""
    return t if bool(mask.all()) else t[mask]


def project_linf(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest L-inf step d with <w, points + d> = b and points + d inside [0, 1], per row (the reference's
    ``projection_linf``, the same operations; (N, D) rows)."""
    t = points
    sign = 2 * ((w * t).sum(1) - b >= 0) - 1
    w, b = w * sign.unsqueeze(1), b * sign
    a = (w < 0).float()
    nonzero = (w != 0).float()
    d = (a - t) * nonzero
    p = a - t * (2 * a - 1)
    indp = torch.argsort(p, dim=1)
    b = b - (w * t).sum(1)
    b0 = (w * d).sum(1)
    indp2 = indp.flip((1,))
    ws = w.gather(1, indp2)
    bs2 = -ws * d.gather(1, indp2)
    s = torch.cumsum(ws.abs(), dim=1)
    sb = torch.cumsum(bs2, dim=1) + b0.unsqueeze(1)
    b2 = sb[:, -1] - s[:, -1] * p.gather(1, indp[:, 0:1]).squeeze(1)
    c_l = b - b2 > 0
    c2 = (b - b0 > 0) & (~c_l)
    n2 = int(c2.sum())
    lb = torch.zeros(n2, device=t.device)
    ub = torch.full_like(lb, w.shape[1] - 1)
    indp_, sb_, s_, p_, b_ = (_where_all(c2, v) for v in (indp, sb, s, p, b))
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        counter4 = torch.floor((lb + ub) / 2)
        counter2 = counter4.long().unsqueeze(1)
        indcurr = indp_.gather(1, indp_.size(1) - 1 - counter2)
        b2 = (sb_.gather(1, counter2) - s_.gather(1, counter2) * p_.gather(1, indcurr)).squeeze(1)
        c = b_ - b2 > 0
        lb = torch.where(c, counter4, lb)
        ub = torch.where(c, ub, counter4)
    lb = lb.long()
    if c_l.any():
        lmbd_opt = torch.clamp_min((b[c_l] - sb[c_l, -1]) / (-s[c_l, -1]), min=0).unsqueeze(-1)
        d[c_l] = (2 * a[c_l] - 1) * lmbd_opt
    if n2:
        rows = torch.arange(n2, device=t.device)
        lmbd_opt = torch.clamp_min((b_ - sb_[rows, lb]) / (-s_[rows, lb]), min=0).unsqueeze(-1)
        d_, a_ = _where_all(c2, d), _where_all(c2, a)
        new = torch.min(lmbd_opt, d_) * a_ + torch.max(-lmbd_opt, d_) * (1 - a_)
        if n2 == len(d):
            d = new
        else:
            d[c2] = new
    return d * nonzero


def project_l2(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The smallest L2 step d with <w, points + d> = b and points + d inside [0, 1], per row (the reference's
    ``projection_l2``, the same operations; (N, D) rows)."""
    t = points
    c = (w * t).sum(1) - b
    ind2 = 2 * (c >= 0) - 1
    w = w * ind2.unsqueeze(1)
    c = c * ind2
    r = torch.max(t / w, (t - 1) / w).clamp(min=-1e12, max=1e12)
    r.masked_fill_(w.abs() < 1e-8, 1e12)
    r[r == -1e12] *= -1
    rs, indr = torch.sort(r, dim=1)
    rs2 = torch.nn.functional.pad(rs[:, 1:], (0, 1))
    rs.masked_fill_(rs == 1e12, 0)
    rs2.masked_fill_(rs2 == 1e12, 0)
    w3s = (w ** 2).gather(1, indr)
    w5 = w3s.sum(dim=1, keepdim=True)
    ws = w5 - torch.cumsum(w3s, dim=1)
    big = (w.abs() > 1e-8).float()
    d = -(r * w)
    d.mul_(big)
    s = torch.cat((-w5 * rs[:, 0:1], torch.cumsum((-rs2 + rs) * ws, dim=1) - w5 * rs[:, 0:1]), 1)
    c4 = s[:, 0] + c < 0
    c3 = (d * w).sum(dim=1) + c > 0
    c2 = ~(c4 | c3)
    n2 = int(c2.sum())
    lb = torch.zeros(n2, device=t.device)
    ub = torch.full_like(lb, w.shape[1] - 1)
    s_, c_ = _where_all(c2, s), _where_all(c2, c)
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        counter4 = torch.floor((lb + ub) / 2)
        counter2 = counter4.long().unsqueeze(1)
        c3 = s_.gather(1, counter2).squeeze(1) + c_ > 0
        lb = torch.where(c3, counter4, lb)
        ub = torch.where(c3, ub, counter4)
    lb = lb.long()
    if c4.any():
        alpha = c[c4] / w5[c4].squeeze(-1)
        d[c4] = -alpha.unsqueeze(-1) * w[c4]
    if n2:
        rows = torch.arange(n2, device=t.device)
        ws_, rs_ = _where_all(c2, ws), _where_all(c2, rs)
        alpha = (s_[rows, lb] + c_) / ws_[rows, lb] + rs_[rows, lb]
        alpha[ws_[rows, lb] == 0] = 0
        c5 = (alpha.unsqueeze(-1) > _where_all(c2, r)).float()
        d[c2] = _where_all(c2, d) * c5 - alpha.unsqueeze(-1) * _where_all(c2, w) * (1 - c5)
    return d * big


@dataclass(repr=False)
class FAB(Attack):
    steps: int = 100
    n_targets: int = 9  # the classes with the largest clean logits, the true one left out
    norm: str = "linf"
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9

    name = "FAB-T"
    kind = "minimal"
    suite = "native"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.n_targets < 1:
            raise ValueError(f"FAB-T needs steps >= 1 and n_targets >= 1, got {self.steps}, {self.n_targets}")
        if self.norm not in ("linf", "l2"):
            raise ValueError(f"FAB-T norm must be linf or l2, got {self.norm}")

    def budget(self) -> dict:
        return {"steps": self.steps, "restarts": 1, "step_size": None}

    def _size(self, d: torch.Tensor) -> torch.Tensor:
        """Per row, the step's size as the reference measures it (L2 as the root of the summed squares, not
        ``torch.norm``: the same floats as the reference, bit for bit)."""
        flat = d.flatten(1)
        return flat.abs().amax(1) if self.norm == "linf" else (flat ** 2).sum(1).sqrt()

    def _targets(self, model, x) -> torch.Tensor:
        """(N, n_targets): the second-largest clean logit's class, the third's, ... (the reference's order)."""
        with torch.no_grad():
            order = model(x).sort(dim=-1)[1]
        n = min(self.n_targets, order.shape[1] - 1)
        return torch.stack([order[:, -k] for k in range(2, n + 2)], 1)

    def perturb(self, model: nn.Module, x, y, eps, generator, progress: Progress | None = None):
        limits = bounds_of(model)
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        x_adv = x.clone()
        chunk = max(1, MAX_ROWS // self.n_targets)
        for s in range(0, len(x), chunk):
            sl = slice(s, s + chunk)
            broken[sl], x_adv[sl] = self._run(model, x[sl], y[sl], eps, limits)
        if progress:
            progress(1)
        return broken, x_adv

    def _evaluate(self, model, x1, y, target, point, grad: bool = True):
        """The target's logit less the true one's at each row's iterate, its input gradient (None without
        ``grad``), and whether the decision changed (``point``: each row's point, for the Observer)."""
        u = torch.arange(len(x1), device=x1.device)
        expect(model, point)
        with torch.enable_grad() if grad else torch.no_grad():
            im = x1.clone().requires_grad_(grad)
            logits = model(im)
            diff = -(logits[u, y] - logits[u, target])
            g = torch.autograd.grad(diff.sum(), im)[0] if grad else None
        return diff.detach(), g, logits.detach().argmax(1) != y

    def _run(self, model, x, y, eps, limits):
        """One chunk of points, all their (point, target) rows stepped together: (broken, x_adv) per point."""
        targets = self._targets(model, x)
        n_t = targets.shape[1]
        point = torch.arange(len(x), device=x.device).repeat_interleave(n_t)
        rows = {"point": point, "target": targets.reshape(-1), "y": y[point], "x0": x[point]}
        rows["x1"] = rows["x0"].clone()
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        x_adv = x.clone()
        shape = (-1, *[1] * (x.dim() - 1))
        df, dg, _ = self._evaluate(model, rows["x1"], rows["y"], rows["target"], rows["point"])
        rows["df"], rows["dg"] = df, dg
        project = project_linf if self.norm == "linf" else project_l2
        for i in range(self.steps):
            if not len(rows["point"]):
                break
            x1, x0, bs = rows["x1"], rows["x0"], len(rows["point"])
            w = rows["dg"].reshape(bs, -1)
            b = -rows["df"] + (rows["dg"] * x1).reshape(bs, -1).sum(dim=-1)
            d3 = project(torch.cat((x1.reshape(bs, -1), x0.reshape(bs, -1)), 0), torch.cat((w, w), 0),
                         torch.cat((b, b), 0))
            d1, d2 = d3[:bs].reshape(x1.shape), d3[-bs:].reshape(x1.shape)
            a0 = self._size(d3).view(shape).clamp_min(1e-8)  # the reference: max(a0, 1e-8)
            a1, a2 = a0[:bs], a0[-bs:]
            alpha = torch.clamp(a1 / (a1 + a2), min=0.0, max=self.alpha_max)  # min(max(., 0), alpha_max)
            x1 = ((x1 + self.eta * d1) * (1 - alpha) + (x0 + d2 * self.eta) * alpha).clamp(*limits)
            last = i == self.steps - 1
            df, dg, wrong = self._evaluate(model, x1, rows["y"], rows["target"], rows["point"], grad=not last)
            if wrong.any():
                hit = wrong.nonzero().squeeze(1)
                ok = self.admissible(x0[hit], x1[hit], eps, limits)
                won = hit[ok & ~broken[rows["point"][hit]]]
                if len(won):  # a point's first such row gives its example
                    first = first_per_point(rows["point"][won])
                    p = rows["point"][won[first]]
                    broken[p], x_adv[p] = True, x1[won[first]]
                x1 = x1.clone()
                x1[hit] = x0[hit] + (x1[hit] - x0[hit]) * self.beta  # pulled back (the reference's beta)
                if not last:
                    df[hit], dg[hit], _ = self._evaluate(model, x1[hit], rows["y"][hit], rows["target"][hit],
                                                         rows["point"][hit])
            if last:
                break
            rows["x1"], rows["df"], rows["dg"] = x1, df, dg
            keep = ~broken[rows["point"]]
            if not keep.all():
                rows = {k: v[keep] for k, v in rows.items()}
        return broken, x_adv

