"""Adapters that run torchattacks and foolbox attacks under robrep's base class.

Both libraries see a plain module returning (N, n_classes) logits of probe∘encoder on the
chosen device. Whatever they return is validated by the base class before it counts (in
the ball, in [0, 1], finite, decision re-computed). Every call is seeded explicitly:
torchattacks' AutoAttack seeds from the clock otherwise, and PGD and foolbox draw their
random starts from torch's global generator.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from robrep.attacks.base import Attack, Progress, predict

_NORMS = {"linf": "Linf", "l2": "L2"}


@dataclass(repr=False)
class TorchattacksAttack(Attack):
    """torchattacks.<attack>(model, eps=..., **kwargs). ``restarts`` > 1 re-runs attacks that
    have no restarts of their own (PGD) with new seeds, on the points still robust."""

    attack: str = "PGD"
    kwargs: dict = field(default_factory=dict)
    restarts: int = 1
    norm: str = "linf"
    label: str = ""  # the name shown in results (default: the torchattacks class name)
    kind: str = "iterative"  # iterative | single-step | black-box | minimal (for the consistency warnings)

    suite = "torchattacks"

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label or self.attack

    @property
    def includes_black_box(self) -> bool:  # type: ignore[override]
        return self.attack in ("AutoAttack", "BinaryAutoAttack")  # both end with Square

    def units(self, radii):
        return self.restarts * sum(1 for r in radii if r > 0)

    def build(self, model: nn.Module, eps: float, seed: int):
        import torchattacks

        if self.attack == "BinaryAutoAttack":
            # AutoAttack's DLR-based parts (APGD-T, FAB-T) need >= 3-4 classes: the binary-safe
            # version runs APGD-CE, untargeted FAB and Square, each on the points still robust.
            parts = [
                TorchattacksAttack("APGD", {"loss": "ce", "steps": 100, "n_restarts": 1}, norm=self.norm),
                TorchattacksAttack("FAB", {"multi_targeted": False, "n_classes": 2, "steps": 100}, norm=self.norm),
                TorchattacksAttack("Square", {"n_queries": 5000, "n_restarts": 1}, norm=self.norm),
            ]
            return torchattacks.MultiAttack([p.build(model, eps, seed) for p in parts])
        cls = getattr(torchattacks, self.attack)
        kwargs = dict(self.kwargs)
        if "rel_alpha" in kwargs:  # a step size relative to the radius, as robrep's own PGD
            kwargs["alpha"] = kwargs.pop("rel_alpha") * eps / kwargs["steps"]
        if "seed" in cls.__init__.__code__.co_varnames:
            kwargs["seed"] = seed
        if "norm" in cls.__init__.__code__.co_varnames:
            kwargs["norm"] = _NORMS[self.norm]
        return cls(model, eps=eps, **kwargs)

    def perturb(self, model, x, y, eps, generator, progress: Progress | None = None):
        broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        x_adv = x.clone()
        for _ in range(self.restarts):
            idx = (~broken).nonzero().squeeze(1)
            if len(idx):
                seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
                torch.manual_seed(seed)  # PGD's random start comes from the global generator
                with torch.enable_grad():
                    adv = self.build(model, eps, seed)(x[idx], y[idx]).detach()
                fooled = predict(model, adv) != y[idx]
                broken[idx[fooled]] = True
                x_adv[idx[fooled]] = adv[fooled]
            if progress:
                progress(1)
        return broken, x_adv


@dataclass(repr=False)
class FoolboxAttack(Attack):
    """foolbox.attacks.<attack>(**kwargs), model wrapped with bounds (0, 1), all radii as one epsilons list."""

    attack: str = "LinfPGD"
    kwargs: dict = field(default_factory=dict)
    restarts: int = 1  # re-seeded calls (for attacks with a random start); a point falls to any of them
    norm: str = "linf"
    label: str = ""
    kind: str = "iterative"

    suite = "foolbox"

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label or self.attack

    def perturb_all(self, model, x, y, radii, generator):
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=x.device)
        attack = getattr(fb.attacks, self.attack)(**self.kwargs)
        out = {r: (torch.zeros(len(x), dtype=torch.bool, device=x.device), x.clone()) for r in radii}
        for _ in range(self.restarts):
            todo = torch.stack([~out[r][0] for r in radii]).any(0)  # still robust at some radius
            if not todo.any():
                break
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
            with torch.enable_grad():
                _, clipped, success = attack(fmodel, x[todo], y[todo], epsilons=list(radii))
            idx = todo.nonzero().squeeze(1)
            for i, r in enumerate(radii):
                broken, adv = out[r]
                new = success[i].to(torch.bool) & ~broken[idx]
                broken[idx[new]] = True
                adv[idx[new]] = clipped[i].detach()[new]
        return out
