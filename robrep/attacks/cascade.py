"""The cascade: the order in which a task's attacks run when each attacks only the points every earlier one
failed on (AutoAttack's own scheme, Croce & Hein 2020), and no attack run twice.

The worst case over a set of attacks does not depend on their order, only the work does: an attack's
cost is spent on the points it is given, and the points the cheap attacks break never reach the
expensive ones. So the cascade runs

0. single-step attacks (FGSM),
1. iterative gradient attacks (BIM, PGD, APGD),
2. minimal-perturbation attacks (FAB, DeepFool),
3. ensembles (what is left of AutoAttack),
4. black-box attacks (Square) last, so the points a black-box attack breaks are exactly the ones every
   gradient attack failed on: a noticeable share of them is the sign of gradient masking;

and within a group, the smaller budget (steps x restarts) first.

**No attack twice.** An ensemble whose part is already in the cascade as an attack of its own, with at
least the same budget (same torchattacks class and settings, at least as many steps, queries and
restarts), is run without that part: AutoAttack-standard beside the torchattacks suite's APGD-CE (10
restarts) and Square (5,000 queries) runs only its targeted APGD and targeted FAB. Every part of the
ensemble still runs once, at least at its published budget, so the worst case is over the same attacks.
"""
from __future__ import annotations

from robrep.attacks.base import Attack
from robrep.attacks.external import COMPOSITIONS, TorchattacksAttack

BUDGET_KEYS = ("steps", "n_queries", "n_restarts")  # a part is covered by an attack with at least this much


def is_chained(cascade: bool, attacks: list[Attack]) -> bool:
    """Whether a task's attacks run as a cascade: asked for, and more than one attack (one alone attacks
    every point either way)."""
    return cascade and len(attacks) > 1


def cost_rank(attack: Attack) -> int:
    """Where ``attack`` goes in the cascade (module docstring): 0 single-step ... 4 black-box."""
    if attack.kind == "black-box":
        return 4
    if isinstance(attack, TorchattacksAttack) and attack.attack in (*COMPOSITIONS, "Parts") or \
            attack.includes_black_box:
        return 3
    return {"single-step": 0, "iterative": 1, "minimal": 2}.get(attack.kind, 1)


def cost(attack: Attack) -> int:
    """Model calls per point, roughly: steps x restarts of the attack's budget (1 where it has none)."""
    b = attack.budget()
    return (b.get("steps") or 1) * (b.get("restarts") or 1)


def _covers(attack: Attack, part: tuple[str, dict]) -> bool:
    """Whether ``attack``, run on its own, is at least ``part`` of an ensemble (same class and settings, no
    smaller budget)."""
    name, kwargs = part
    if not isinstance(attack, TorchattacksAttack) or attack.attack != name:
        return False
    for key, value in kwargs.items():
        mine = attack.kwargs.get(key)
        if key in BUDGET_KEYS:
            if mine is None and key == "n_restarts":
                mine = 1
            if mine is None or mine < value:
                return False
        elif mine != value:
            return False
    return True


def _without_duplicates(attack: Attack, others: list[Attack]) -> Attack | None:
    """``attack``, or, for an ensemble, the ensemble of its parts that no other attack covers (None if none
    is left)."""
    if not isinstance(attack, TorchattacksAttack) or attack.attack not in COMPOSITIONS:
        return attack
    parts = COMPOSITIONS[attack.attack](attack.kwargs)
    left = [p for p in parts if not any(_covers(o, p) for o in others)]
    if len(left) == len(parts):
        return attack
    if not left:
        return None
    covered = [p for p in parts if p not in left]
    base = (attack.label or attack.attack).split("(")[0]
    label = (f"{base}(rest: {', '.join(_short(p) for p in left)}; "
             f"{', '.join(_short(p) for p in covered)} ran as own stages)")
    rest = TorchattacksAttack("Parts", {"parts": [[n, kw] for n, kw in left], "of": attack.attack,
                                        "of_kwargs": attack.kwargs}, norm=attack.norm, label=label, kind=attack.kind)
    rest.suite = attack.suite
    return rest


def _short(part: tuple[str, dict]) -> str:
    name, kw = part
    if name == "Square":
        return f"Square {kw.get('n_queries')}"
    targeted = kw.get("multi_targeted") or name.endswith("T")
    name = {"APGD": "APGD-CE", "APGDT": "APGD-T"}.get(name, name)
    if name == "FAB" and targeted:
        name = "FAB-T"
    return f"{name} {kw.get('steps')}"


def cascade(attacks: list[Attack]) -> list[Attack]:
    """``attacks`` in cascade order, ensembles without the parts other attacks already run (see above)."""
    kept = []
    for a in attacks:
        a = _without_duplicates(a, [o for o in attacks if o is not a])
        if a is not None:
            kept.append(a)
    return sorted(kept, key=lambda a: (cost_rank(a), cost(a)))  # stable: then the suites' order
