"""The part every attack shares: the radius loop, reuse across radii, and the result.

An attack only writes ``perturb``: given the points still robust at radius ``eps``,
return which of them it broke and the adversarial inputs that did it. The base class
owns the rest, as foolbox's does:

- radius 0 is evaluated without attacking (it is the clean accuracy);
- radii are visited in increasing order and a point broken at radius r counts as
  broken at every larger radius (its adversarial input lies in the larger ball too),
  so it is never attacked again;
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


@dataclass
class AttackResult:
    """Per radius: which points are robust and the inputs that were evaluated (x_adv, or x itself if robust)."""

    radii: list[float]
    clean_correct: torch.Tensor  # (N,) bool
    robust: dict[float, torch.Tensor] = field(default_factory=dict)  # radius -> (N,) bool
    x_adv: dict[float, torch.Tensor] = field(default_factory=dict)  # radius -> (N, C, H, W)
    attacked: dict[float, int] = field(default_factory=dict)  # radius -> points actually attacked
    wall_seconds: float = 0.0

    def accuracy(self, radius: float) -> float:
        return self.robust[radius].float().mean().item()


class Attack:
    """Base class. Subclasses set ``name``, ``norm`` and implement ``perturb``."""

    name = "attack"
    norm = "linf"
    suite = "native"

    def settings(self) -> dict:
        """The attack's full configuration, recorded in every result row."""
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

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

    @torch.no_grad()
    def run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, radii: list[float], seed: int,
        progress: Progress | None = None, batch_size: int = 1000,
    ) -> AttackResult:
        if any(r < 0 for r in radii):
            raise ValueError(f"attack radii must be >= 0, got {radii}")
        t0 = time.perf_counter()
        model.eval()
        radii = sorted(set(float(r) for r in radii))
        pred = torch.cat([model(x[i:i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
        res = AttackResult(radii, clean_correct=pred == y)
        robust, x_adv = res.clean_correct.clone(), x.clone()
        for k, eps in enumerate(radii):
            # only points not yet broken at a smaller radius (unless the attack opts out of reuse)
            idx = (robust if getattr(self, "reuse", True) else res.clean_correct).nonzero().squeeze(1)
            res.attacked[eps] = len(idx) if eps > 0 else 0
            if eps > 0 and len(idx):
                gen = torch.Generator().manual_seed(seed * 1000 + k)
                for s in range(0, len(idx), batch_size):
                    b = idx[s:s + batch_size]
                    broken, adv = self.perturb(model, x[b], y[b], eps, gen, progress if s == 0 else None)
                    newly = broken & robust[b]  # without reuse, keep the first (smallest-radius) example
                    robust[b[newly]] = False
                    x_adv[b[newly]] = adv[newly].to(x_adv.dtype)
            elif eps > 0 and progress:
                progress(self.units([eps]))
            res.robust[eps] = robust.clone()
            res.x_adv[eps] = x_adv.clone()
        res.wall_seconds = time.perf_counter() - t0
        return res
