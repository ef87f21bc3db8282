"""Adapters that run torchattacks and foolbox attacks under robrep's base class.

Both libraries see a plain module returning (N, n_classes) logits of probe∘encoder on the
chosen device. Whatever they return is validated by the base class before it counts (in
the ball, in [0, 1], finite, decision re-computed). Every call is seeded explicitly:
torchattacks' AutoAttack seeds from the clock otherwise, and PGD and foolbox draw their
random starts from torch's global generator.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from robrep.attacks.base import Attack, Progress
from robrep.attacks.geometry import bounds_of

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
        if self.attack == "Parts":
            return any(name == "Square" for name, _ in self.kwargs["parts"])
        return self.attack in ("AutoAttack", *COMPOSITIONS)  # every AutoAttack ends with Square

    def units(self, radii):
        return self.restarts * sum(1 for r in radii if r > 0)

    def build(self, model: nn.Module, eps: float, seed: int):
        import torchattacks

        if tuple(bounds_of(model)) != (0.0, 1.0):  # torchattacks clamps every input to [0, 1] itself
            raise ValueError(f"torchattacks takes inputs in [0, 1]; this model's bounds are {bounds_of(model)}")

        if self.attack in COMPOSITIONS or self.attack == "Parts":
            # "Parts": some of a composition's parts (the cascade runs the others as attacks of their own)
            given = self.kwargs["parts"] if self.attack == "Parts" else COMPOSITIONS[self.attack](self.kwargs)
            parts = [TorchattacksAttack(a, kw, norm=self.norm) for a, kw in given]
            return torchattacks.MultiAttack([p.build(model, eps, seed + i) for i, p in enumerate(parts)])
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
        return self.restarted(model, x, y, eps, generator, progress, self.restarts,
                              lambda xs, ys, seed: self.build(model, eps, seed)(xs, ys), grad=not self.grad_free)

    @property
    def grad_free(self) -> bool:
        """Whether the attack (every part of a composition) switches gradients on itself where it needs them, so
        it runs with them off: torchattacks' APGD and APGD-T index-assign their iterate, which requires grad,
        into their best-so-far tensor outside those blocks, and with gradients on that chains every iteration's
        iterate into one autograd graph kept to the end of the run (14 GB on colormnist5k's L2 protocol)."""
        if self.attack == "Parts":
            names = [name for name, _ in self.kwargs["parts"]]
        elif self.attack in COMPOSITIONS:
            names = [name for name, _ in COMPOSITIONS[self.attack](self.kwargs)]
        else:
            names = [self.attack]
        return all(name in SELF_ENABLING for name in names)


def _autoattack(kwargs: dict) -> list[tuple[str, dict]]:
    """AutoAttack's standard version as Croce & Hein (2020) publish it (fra31/auto-attack, version
    'standard'): APGD-CE and targeted APGD (DLR loss) with 100 iterations, targeted FAB with 100, each with
    one restart and the targeted ones over the top n_classes - 1 classes (9 for ten classes), and Square
    with 5,000 queries; each part attacks the points every earlier part failed on. torchattacks'
    own ``AutoAttack`` class runs its APGD and FAB parts with 10 iterations."""
    n, steps = kwargs["n_classes"], kwargs.get("steps", 100)
    return [
        ("APGD", {"loss": "ce", "steps": steps, "n_restarts": 1}),
        ("APGDT", {"steps": steps, "n_restarts": 1, "n_classes": n}),
        ("FAB", {"multi_targeted": True, "n_classes": n, "steps": steps, "n_restarts": 1}),
        ("Square", {"n_queries": kwargs.get("n_queries", 5000), "n_restarts": 1}),
    ]


def _binary_autoattack(kwargs: dict) -> list[tuple[str, dict]]:
    """AutoAttack's DLR-based parts (APGD-T, FAB-T) need >= 3-4 classes: the binary-safe version runs
    APGD-CE, untargeted FAB and Square at the standard version's budgets, each on the points still robust."""
    steps = kwargs.get("steps", 100)
    return [
        ("APGD", {"loss": "ce", "steps": steps, "n_restarts": 1}),
        ("FAB", {"multi_targeted": False, "n_classes": 2, "steps": steps, "n_restarts": 1}),
        ("Square", {"n_queries": kwargs.get("n_queries", 5000), "n_restarts": 1}),
    ]


# torchattacks classes that switch gradients on themselves (``torch.enable_grad()``) where they take them
SELF_ENABLING = frozenset({"APGD", "APGDT", "FAB", "Square"})

# torchattacks compositions robrep builds itself (name -> kwargs -> [(torchattacks class, kwargs)])
COMPOSITIONS = {"AutoAttackStandard": _autoattack, "BinaryAutoAttack": _binary_autoattack}


@dataclass(repr=False)
class FoolboxAttack(Attack):
    """foolbox.attacks.<attack>(**kwargs), model wrapped with its input bounds, one radius per call (so each
    radius has its own seed and only the points still robust are attacked)."""

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

    def perturb(self, model, x, y, eps, generator, progress: Progress | None = None):
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=bounds_of(model), device=x.device)
        attack = getattr(fb.attacks, self.attack)(**self.kwargs)

        def call(xs, ys, seed):
            _, clipped, _ = attack(fmodel, xs, ys, epsilons=[eps])
            return clipped[0]

        return self.restarted(model, x, y, eps, generator, progress, self.restarts, call)

    def units(self, radii):
        return self.restarts * sum(1 for r in radii if r > 0)
