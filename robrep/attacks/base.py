"""The part every attack shares: the radius loop, reuse across radii, validation, the result.

An attack writes ``perturb`` (one radius: given the points still robust at radius ``eps``,
return which it broke and the inputs that did it) or, for libraries that evaluate a whole
list of radii in one call (foolbox), ``perturb_all``. The base class owns the rest, as
foolbox's does:

- radius 0 is evaluated without attacking (it is the clean accuracy);
- radii are visited in increasing order and a point broken at radius r counts as
  broken at every larger radius (its adversarial input lies in the larger ball too),
  so it is never attacked again;
- an adversarial input only counts once it is checked: finite, inside [0, 1], inside the
  ball, and misclassified when the decision is re-computed here. A returned input that
  fails (a library bug, a leaky projection) is rejected and counted in ``rejected``;
- every attack gets an explicit seed.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

Progress = Callable[[int], None]  # called with a number of work units done
TOL = 1e-6  # slack of the ball check: float32 rounding of x + delta


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Decisions (argmax of the logits) of ``model`` on x, in batches. (N,)"""
    return torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def radius_grid(radii) -> list[float]:
    """Radii as sorted distinct floats: the order attacks visit them and results store them in."""
    return sorted(set(float(r) for r in radii))


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(dim=1)


@dataclass
class AttackResult:
    """Per radius: which points are robust and the inputs that were evaluated (x_adv, or x itself if robust)."""

    radii: list[float]
    clean_correct: torch.Tensor  # (N,) bool
    robust: dict[float, torch.Tensor] = field(default_factory=dict)  # radius -> (N,) bool
    x_adv: dict[float, torch.Tensor] = field(default_factory=dict)  # radius -> (N, C, H, W)
    attacked: dict[float, int] = field(default_factory=dict)  # radius -> points actually attacked
    rejected: dict[float, int] = field(default_factory=dict)  # radius -> returned inputs that failed validation
    wall_seconds: float = 0.0

    def accuracy(self, radius: float) -> float:
        return self.robust[radius].float().mean().item()


class Attack:
    """Base class. Subclasses set ``name``, ``norm``, ``suite`` and implement ``perturb`` or ``perturb_all``."""

    name = "attack"
    norm = "linf"
    suite = "native"
    kind = "iterative"  # iterative | single-step | black-box | minimal (for the consistency warnings)
    includes_black_box = False  # an ensemble with a black-box part (AutoAttack): not a pure gradient attack
    reuse = True  # attack only the points not broken at a smaller radius

    def settings(self) -> dict:
        """The attack's full configuration, recorded in every result row."""
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def budget(self) -> dict:
        """The budget columns of its rows: ``steps``, ``restarts`` (re-seeded runs x the attack's own
        restarts, e.g. APGD's n_restarts) and ``step_size``, each None where the attack has none."""
        settings = self.settings()
        kwargs = settings.get("kwargs", {})
        has_restarts = "restarts" in settings or "n_restarts" in kwargs
        return {
            "steps": settings.get("steps", kwargs.get("steps")),
            "restarts": settings.get("restarts", 1) * kwargs.get("n_restarts", 1) if has_restarts else None,
            "step_size": f"{settings['rel_stepsize']} * radius / steps" if "rel_stepsize" in settings else None,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"

    def units(self, radii: list[float]) -> int:
        """Work units reported through ``progress`` for a whole run (for progress bars)."""
        return sum(1 for r in radii if r > 0)

    def perturb(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, generator: torch.Generator,
        progress: Progress | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attack the (correctly classified) points x at radius eps. Returns (broken (n,) bool, x_adv (n, ...))."""
        raise NotImplementedError

    def perturb_all(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, radii: list[float], generator: torch.Generator,
    ) -> dict[float, tuple[torch.Tensor, torch.Tensor]] | None:
        """Attack at every radius in one call; None (the default) means: use ``perturb`` per radius."""
        return None

    @torch.no_grad()
    def validate(self, model, x, y, x_adv, eps, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
        """(valid, fooled): returned input is finite, in [0,1] and in the ball; and it is misclassified."""
        ok = torch.isfinite(x_adv).flatten(1).all(1)
        ok &= (x_adv >= 0).flatten(1).all(1) & (x_adv <= 1).flatten(1).all(1)
        ok &= perturbation_norm(x_adv - x, self.norm) <= eps + TOL
        return ok, predict(model, x_adv, batch_size) != y

    @torch.no_grad()
    def run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, radii: list[float], seed: int,
        progress: Progress | None = None, batch_size: int = 1000,
    ) -> AttackResult:
        if any(r < 0 for r in radii):
            raise ValueError(f"attack radii must be >= 0, got {radii}")
        t0 = time.perf_counter()
        model.eval()
        radii = radius_grid(radii)
        res = AttackResult(radii, clean_correct=predict(model, x, batch_size) == y)
        robust, x_adv = res.clean_correct.clone(), x.clone()
        positive = [r for r in radii if r > 0]
        correct = res.clean_correct.nonzero().squeeze(1)
        at_once = self.perturb_all(model, x[correct], y[correct], positive, torch.Generator().manual_seed(seed)) \
            if len(correct) and positive else None
        for k, eps in enumerate(radii):
            res.attacked[eps] = res.rejected[eps] = 0
            if eps > 0:
                if at_once is not None:
                    idx, (broken, adv) = correct, at_once[eps]
                    if progress:
                        progress(self.units([eps]))
                else:
                    # only points not yet broken at a smaller radius (unless the attack opts out of reuse)
                    idx = (robust if self.reuse else res.clean_correct).nonzero().squeeze(1)
                    broken, adv = torch.zeros(0, dtype=torch.bool), x[:0]
                    gen = torch.Generator().manual_seed(seed * 1000 + k)
                    parts = [self.perturb(model, x[idx[s:s + batch_size]], y[idx[s:s + batch_size]], eps, gen,
                                          progress if s == 0 else None) for s in range(0, len(idx), batch_size)]
                    if parts:
                        broken, adv = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
                    elif progress:
                        progress(self.units([eps]))
                res.attacked[eps] = len(idx)
                if len(idx):
                    adv = adv.to(x.dtype)
                    valid, fooled = self.validate(model, x[idx], y[idx], adv, eps)
                    res.rejected[eps] = int((broken & ~(valid & fooled)).sum())  # claimed, but not confirmed
                    # a point falls only to a checked input; keep the smallest-radius example
                    newly = fooled & valid & robust[idx]
                    robust[idx[newly]] = False
                    x_adv[idx[newly]] = adv[newly]
            res.robust[eps] = robust.clone()
            res.x_adv[eps] = x_adv.clone()
        res.wall_seconds = time.perf_counter() - t0
        return res
