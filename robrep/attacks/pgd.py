"""robrep's own projected gradient descent (Madry et al. 2018), L-inf and L2.

Untargeted, random restarts, step size ``rel_stepsize * eps / steps``. A point is broken
as soon as any admissible iterate of any restart changes the decision; broken points leave
the batch at once, and later restarts attack only the points still robust.

The loss the ascent maximises: cross-entropy (``ce``), the margin of the best other class over the
true one (``margin``, the loss of Carlini and Wagner and, scaled, of AutoAttack's DLR), or both with
the restarts alternating between them (``ce+margin``: restart 1 cross-entropy, restart 2 margin, ...),
as AutoAttack pairs APGD-CE with APGD-DLR: a point robust to one loss's ascent is often broken by the
other's, at the same budget.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robrep.attacks.base import Attack, Progress
from robrep.attacks.geometry import ball_box, bounds_of, flat_norm, project, uniform_in_ball
from robrep.attacks.observer import expect
from robrep.attacks.stacked import at


LOSSES = ("ce", "margin", "ce+margin")


@dataclass(repr=False)
class PGD(Attack):
    steps: int = 100
    restarts: int = 10
    rel_stepsize: float = 2.5
    loss: str = "ce"  # "ce" (cross-entropy), "margin" (best other logit minus the true one) or "ce+margin"
    norm: str = "linf"  # "linf" or "l2"
    # Skip work that cannot change the answer: points broken at a smaller radius, in an
    # earlier restart or at an earlier iterate. False attacks every point in every restart
    # for every step at every radius (only for measuring what the reuse saves).
    reuse: bool = True

    name = "pgd"
    kind = "iterative"

    @property
    def stackable(self) -> bool:
        """Whether cells of one encoder can share a pass of it (``robrep.attacks.stacked``): robrep's own loop,
        which names its rows and treats them independently. A subclass that replaces a part (its random start,
        step, objective) may draw from the generator itself or mix rows, so it is attacked one cell at a time."""
        cls = type(self)
        return all(getattr(cls, part) is getattr(PGD, part)
                   for part in ("perturb", "random_start", "ascent_step", "objective", "loss_of"))

    def __post_init__(self) -> None:
        if self.steps < 1 or self.restarts < 1:
            raise ValueError(f"PGD needs steps >= 1 and restarts >= 1, got {self.steps}, {self.restarts}")
        if self.norm not in ("linf", "l2") or self.loss not in LOSSES:
            raise ValueError(f"PGD norm must be linf or l2 and loss one of {', '.join(LOSSES)}, got {self.norm}, "
                             f"{self.loss}")

    def units(self, radii):
        return self.restarts * sum(1 for r in radii if r > 0)

    # -- the parts a variant replaces (tests build deliberately weak attacks this way) --------------------
    def random_start(self, x, eps, gen, bounds):
        """Where a restart begins: uniform in the ball, inside the bounds."""
        return uniform_in_ball(x, eps, self.norm, gen, bounds)

    def ascent_step(self, xt, grad, alpha):
        """One ascent step from xt: alpha times the gradient's sign (L-inf) or its direction (L2). May write into
        xt and grad (the loop's own, used for nothing else)."""
        if self.norm == "linf":  # in place: xt and grad are this step's own (alpha * sign is exact: rounded once)
            return xt.add_(grad.sign_(), alpha=alpha)
        return xt + alpha * (grad / flat_norm(grad))

    def loss_of(self, restart: int) -> str:
        """The loss restart ``restart`` (from 0) ascends: ``ce+margin`` alternates, cross-entropy first."""
        if self.loss == "ce+margin":
            return ("ce", "margin")[restart % 2]
        return self.loss

    def objective(self, logits, y, loss: str | None = None):
        """What the ascent maximises, summed over the points: cross-entropy, or the margin of the best other
        class over the true one (``loss``: which; default the attack's own, its first restart's)."""
        if (loss or self.loss_of(0)) == "ce":
            return F.cross_entropy(logits, y, reduction="sum")
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).max(1).values
        return (other - true).sum()

    def perturb(self, model: nn.Module, x, y, eps, generator, progress: Progress | None = None):
        alpha = self.rel_stepsize * eps / self.steps
        limits = bounds_of(model)  # the inputs' bounds, carried by the attacked model
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        restart = torch.full((len(x),), -1, dtype=torch.long, device=x.device)
        x_adv = x.clone()
        for k in range(self.restarts):
            loss = self.loss_of(k)
            idx = (~broken if self.reuse else torch.ones_like(broken)).nonzero().squeeze(1)
            if len(idx) == 0:
                if progress:
                    progress(1)
                continue
            x0, y0 = x[idx], y[idx]
            box = ball_box(x0, eps, self.norm, limits)
            xt = self.random_start(x0, eps, at(generator, idx), limits)
            for t in range(self.steps + 1):
                last = t == self.steps  # the last iterate is only scored: no graph
                with torch.enable_grad() if not last else torch.no_grad():
                    xt.requires_grad_(not last)
                    expect(model, idx)  # the points of the rows (for the Observer; stacked cells need it)
                    logits = model(xt)
                    # any admissible iterate that changes the decision breaks the point (an inadmissible
                    # one, e.g. a rounding error past the ball, is not counted and the point stays attacked);
                    # the guards run on the misclassified iterates only (they are per point)
                    flipped = logits.argmax(1) != y0
                    if flipped.any():
                        wrong = flipped.nonzero().squeeze(1)
                        flipped[wrong] = self.admissible(x0[wrong], xt.detach()[wrong], eps, limits)
                    keep = ~flipped if self.reuse else torch.ones_like(flipped)
                    grad = None
                    if not last and keep.all():  # most steps: nothing to drop, no copies
                        grad = torch.autograd.grad(self.objective(logits, y0, loss), xt)[0]
                    elif not last and keep.any():
                        grad = torch.autograd.grad(self.objective(logits[keep], y0[keep], loss), xt)[0][keep]
                xt = xt.detach()
                if flipped.any():
                    new = flipped & ~broken[idx]
                    broken[idx[new]] = True
                    restart[idx[new]] = k
                    x_adv[idx[new]] = xt[new]
                    if not keep.all():  # (without reuse every point stays: nothing to copy)
                        idx, x0, y0, xt = idx[keep], x0[keep], y0[keep], xt[keep]
                        box = tuple(b[keep] for b in box)
                if grad is None:
                    break
                xt = project(self.ascent_step(xt, grad, alpha), box, eps, self.norm, limits)
            unbroken = ~broken[idx]
            x_adv[idx[unbroken]] = xt[unbroken]  # the last iterate of the points this restart did not break
            if progress:
                progress(1)
        return broken, x_adv, {"restart": restart, "restarts": self.restarts}
