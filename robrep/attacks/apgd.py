"""robrep's APGD (Croce and Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks"), L-inf and L2: the cross-entropy (APGD-CE), DLR (APGD-DLR) and targeted DLR (APGD-T)
versions, with every target and restart of a point in one batch.

The published algorithm, as its reference implementation runs it (fra31/auto-attack, ``autopgd_base.py``): a
random start on the ball's surface (L-inf: a uniform direction scaled so its largest coordinate is the radius;
L2: a Gaussian direction of length the radius), step size 2 x radius, momentum 0.75 after the first step, and
the step halved at the checkpoints (the first after 22 % of the iterations, each next one 3 % of the iterations
sooner, at least 6 % apart) where fewer than rho = 75 % of the steps since the last checkpoint increased the
loss, or where the step was not halved at the last checkpoint and the best loss has not improved since; a halved
step restarts from the best point so far. APGD-T attacks each of the ``n_targets`` classes with the largest clean
logits other than the true one (AutoAttack's standard version: 9) with the targeted DLR loss.

What differs is the schedule of the work, never the algorithm: the reference runs target after target (and
restart after restart) on the points still robust; here each (point, target, restart) is a row of one batch, all
rows step together (one model call per iteration instead of one per target), and a point leaves the batch, with
all its rows, as soon as one of its iterates is misclassified (the reference keeps stepping a broken row to the
end of its run, which cannot change whether the point is broken). The rows of a point are independent runs, so
a point is broken here exactly when some target's (or restart's) run breaks it, as in the reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robrep.attacks.base import Attack, Progress
from robrep.attacks.geometry import bounds_of
from robrep.attacks.observer import expect

LOSSES = ("ce", "dlr", "dlr-targeted")
MAX_ROWS = 8192  # rows (points x targets x restarts) stepped together; more points are attacked in chunks


def dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The difference-of-logits ratio (per row): minus the margin of the true class over the best other one,
    divided by the gap between the largest and the third-largest logit."""
    z, _ = logits.sort(dim=1)
    true = logits.gather(1, y[:, None]).squeeze(1)
    top_is_true = logits.argmax(1) == y
    other = torch.where(top_is_true, z[:, -2], z[:, -1])
    return -(true - other) / (z[:, -1] - z[:, -3] + 1e-12)


def dlr_targeted(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The targeted DLR (per row): minus the margin of the true class over the target, divided by the gap between
    the largest logit and the mean of the third and fourth largest."""
    z, _ = logits.sort(dim=1)
    true, tgt = logits.gather(1, y[:, None]).squeeze(1), logits.gather(1, target[:, None]).squeeze(1)
    return -(true - tgt) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


@dataclass(repr=False)
class APGD(Attack):
    steps: int = 100
    restarts: int = 1
    loss: str = "ce"  # "ce" (APGD-CE), "dlr" (APGD-DLR) or "dlr-targeted" (APGD-T)
    n_targets: int = 9  # APGD-T: the classes with the largest clean logits, the true one left out
    norm: str = "linf"
    rho: float = 0.75

    kind = "iterative"
    suite = "native"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.restarts < 1:
            raise ValueError(f"APGD needs steps >= 1 and restarts >= 1, got {self.steps}, {self.restarts}")
        if self.norm not in ("linf", "l2") or self.loss not in LOSSES:
            raise ValueError(f"APGD norm must be linf or l2 and loss one of {', '.join(LOSSES)}, got {self.norm}, "
                             f"{self.loss}")
        if self.loss == "dlr-targeted" and self.n_targets < 1:
            raise ValueError(f"APGD-T needs n_targets >= 1, got {self.n_targets}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return {"ce": "APGD-CE", "dlr": "APGD-DLR", "dlr-targeted": "APGD-T"}[self.loss]

    def budget(self) -> dict:
        return {"steps": self.steps, "restarts": self.restarts, "step_size": "2 * radius, halved adaptively"}

    def units(self, radii):
        return sum(1 for r in radii if r > 0)

    # -- the algorithm ------------------------------------------------------------------------------------------
    def _normalize(self, t: torch.Tensor) -> torch.Tensor:
        flat = t.flatten(1)
        size = flat.abs().amax(1) if self.norm == "linf" else flat.norm(dim=1)
        return t / (size.view(-1, *[1] * (t.dim() - 1)) + 1e-12)

    def _project(self, z: torch.Tensor, x: torch.Tensor, eps: float, limits, box) -> torch.Tensor:
        """z projected onto the ball around x, then clipped to the input bounds (the reference's order; under
        L-inf one clamp to ``box``, the ball's box within the bounds: the same numbers for x within the bounds)."""
        if self.norm == "linf":
            return torch.clamp(z, *box)
        d = z - x
        size = d.flatten(1).norm(dim=1).view(-1, *[1] * (d.dim() - 1))
        return (x + self._normalize(d) * torch.clamp(size, max=eps)).clamp(*limits)

    def random_start(self, x0: torch.Tensor, eps: float, generator: torch.Generator, limits) -> torch.Tensor:
        """Where each row starts: on the ball's surface in a random direction (L-inf: uniform noise scaled so its
        largest coordinate is the radius; L2: Gaussian noise of length the radius), clipped to the bounds. Drawn
        on the CPU from ``generator``, so it is the same on any device."""
        noise = (2 * torch.rand(x0.shape, generator=generator) - 1) if self.norm == "linf" else \
            torch.randn(x0.shape, generator=generator)
        return (x0 + eps * self._normalize(noise.to(x0.device, x0.dtype))).clamp(*limits)

    def _objective(self, logits, y, target):
        if self.loss == "ce":
            return F.cross_entropy(logits, y, reduction="none")
        if self.loss == "dlr":
            return dlr(logits, y)
        return dlr_targeted(logits, y, target)

    def _rows(self, model, x, y):
        """Each point's rows: (point index, target) per (target, restart)."""
        if self.loss != "dlr-targeted":
            return (torch.arange(len(x), device=x.device).repeat_interleave(self.restarts), None)
        with torch.no_grad():
            order = model(x).argsort(dim=1, descending=True)  # the true class of a correct point first
        n_targets = min(self.n_targets, order.shape[1] - 1)
        targets = order[:, 1:n_targets + 1]  # (N, n_targets): second largest, third largest, ...
        per_point = n_targets * self.restarts
        point = torch.arange(len(x), device=x.device).repeat_interleave(per_point)
        target = targets.repeat_interleave(self.restarts, dim=1).reshape(-1)
        return point, target

    def perturb(self, model: nn.Module, x, y, eps, generator, progress: Progress | None = None):
        limits = bounds_of(model)
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        restart = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        x_adv = x.clone()
        rows_per_point = self.restarts * (self.n_targets if self.loss == "dlr-targeted" else 1)
        chunk = max(1, MAX_ROWS // rows_per_point)
        for s in range(0, len(x), chunk):
            sl = slice(s, s + chunk)
            b, adv, k = self._run(model, x[sl], y[sl], eps, generator, limits)
            broken[sl], x_adv[sl], restart[sl] = b, adv, k
        if progress:
            progress(1)
        return broken, x_adv, {"restart": restart, "restarts": self.restarts}

    def _run(self, model, x, y, eps, generator, limits):
        """One chunk of points: all their rows stepped together; returns (broken, x_adv, restart) per point."""
        point, target = self._rows(model, x, y)
        x0 = x[point]
        rows = _Rows(x0=x0, y0=y[point], point=point,  # target: each row's class for APGD-T (unused otherwise)
                     target=target if target is not None else y[point],
                     replica=torch.arange(len(point), device=x.device) % self.restarts,  # each row's restart
                     lo=(x0 - eps).clamp_min(limits[0]), hi=(x0 + eps).clamp_max(limits[1]))  # ball in bounds
        out = _Outcome(x)
        rows.xa = self.random_start(x0, eps, generator, limits)
        rows.loss, rows.grad, wrong = self._evaluate(model, rows)
        rows.x_best, rows.grad_best, rows.loss_best = rows.xa.clone(), rows.grad.clone(), rows.loss.clone()
        rows.step = torch.full((len(point),), 2.0 * eps, device=x.device)
        rows.x_old = rows.xa.clone()
        rows.loss_steps = torch.zeros(len(point), self.steps, device=x.device)
        rows.loss_best_last, rows.reduced_last = rows.loss_best.clone(), torch.ones_like(rows.loss_best)
        rows.keep(self._settle(out, rows, wrong, eps, limits))
        k, counter = max(int(0.22 * self.steps), 1), 0
        for i in range(self.steps):
            if not len(rows):
                break
            wrong = self._step(model, rows, i, eps, limits)
            counter += 1
            if counter == k:
                self._checkpoint(rows, i, k)
                k, counter = max(k - max(int(0.03 * self.steps), 1), max(int(0.06 * self.steps), 1)), 0
            rows.keep(self._settle(out, rows, wrong, eps, limits))
        return out.finish(rows)

    def _evaluate(self, model, rows):
        """Loss, its input gradient, and whether the decision changed, at every row's current iterate."""
        expect(model, rows.point)  # each row's point, for the Observer
        with torch.enable_grad():
            xa = rows.xa.clone().requires_grad_(True)
            logits = model(xa)
            loss = self._objective(logits, rows.y0, rows.target)
            grad = torch.autograd.grad(loss.sum(), xa)[0]
        return loss.detach(), grad.detach(), logits.detach().argmax(1) != rows.y0

    def _step(self, model, rows, i: int, eps: float, limits) -> torch.Tensor:
        """Iteration ``i``: the momentum step (the first without momentum), then the new iterate's loss."""
        shape = (-1, *[1] * (rows.xa.dim() - 1))
        a = 0.75 if i > 0 else 1.0
        move = rows.grad.sign() if self.norm == "linf" else self._normalize(rows.grad)
        box = rows.lo, rows.hi
        z = self._project(rows.xa + rows.step.view(shape) * move, rows.x0, eps, limits, box)
        z = self._project(rows.xa + (z - rows.xa) * a + (rows.xa - rows.x_old) * (1 - a), rows.x0, eps, limits, box)
        rows.x_old, rows.xa = rows.xa, z
        rows.loss, rows.grad, wrong = self._evaluate(model, rows)
        rows.loss_steps[:, i] = rows.loss
        better = (rows.loss > rows.loss_best).nonzero().squeeze(1)
        rows.x_best[better], rows.grad_best[better] = rows.xa[better], rows.grad[better]
        rows.loss_best[better] = rows.loss[better]
        return wrong

    def _checkpoint(self, rows, i: int, k: int) -> None:
        """Halve the step of the rows whose loss rose in at most rho of the last k steps, or whose step was not
        halved last time and whose best loss has not improved since; they restart from their best point."""
        steps = rows.loss_steps
        increases = torch.zeros_like(rows.loss)
        for c in range(k):  # the reference's indexing: at the first checkpoint it wraps to the last column
            increases += (steps[:, i - c] > steps[:, i - c - 1]).float()
        halve = (increases <= k * self.rho) | ((rows.reduced_last == 0) & (rows.loss_best_last >= rows.loss_best))
        rows.reduced_last, rows.loss_best_last = halve.float(), rows.loss_best.clone()
        rows.step = torch.where(halve, rows.step / 2, rows.step)
        back = halve.nonzero().squeeze(1)
        rows.xa, rows.grad = rows.xa.clone(), rows.grad.clone()
        rows.xa[back], rows.grad[back] = rows.x_best[back], rows.grad_best[back]

    def _settle(self, out, rows, wrong, eps, limits) -> torch.Tensor:
        """Points with a misclassified, admissible iterate are broken (the first such row's iterate is their
        example); returns the rows to keep stepping (those of the points still robust)."""
        if wrong.any():
            hit = wrong.nonzero().squeeze(1)
            hit = hit[self.admissible(rows.x0[hit], rows.xa[hit], eps, limits)]
            hit = hit[~out.broken[rows.point[hit]]]
            if len(hit):
                first = first_per_point(rows.point[hit])
                hit = hit[first]
                p = rows.point[hit]
                out.broken[p], out.restart[p], out.x_adv[p] = True, rows.replica[hit], rows.xa[hit]
        return ~out.broken[rows.point]


def first_per_point(point: torch.Tensor) -> torch.Tensor:
    """Indices into ``point`` of the first row of each point it holds."""
    order = torch.argsort(point, stable=True)
    p = point[order]
    first = torch.ones_like(p, dtype=torch.bool)
    first[1:] = p[1:] != p[:-1]
    return order[first]


class _Rows:
    """The rows of one APGD run still stepping, as per-row tensors (dimension 0) dropped together (``keep``)."""

    def __init__(self, **tensors):
        self.__dict__.update(tensors)

    def __len__(self) -> int:
        return len(self.point)

    def keep(self, mask: torch.Tensor) -> None:
        if not mask.all():
            for name, t in list(self.__dict__.items()):
                self.__dict__[name] = t[mask]


class _Outcome:
    """Per point of a chunk: broken, the restart that broke it, and its example (or, robust, its best iterate)."""

    def __init__(self, x: torch.Tensor):
        self.broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.restart = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        self.x_adv = x.clone()

    def finish(self, rows: _Rows):
        if len(rows):  # the points no row broke: the best iterate of their first row
            first = first_per_point(rows.point)
            self.x_adv[rows.point[first]] = rows.x_best[first]
        return self.broken, self.x_adv, self.restart
