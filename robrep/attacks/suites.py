"""Attack suites, registered by name: ``native``, ``torchattacks``, ``foolbox``.

A suite is ``fn(n_classes, *, steps, restarts, norm) -> list[Attack]``: the task's number of
classes decides which attacks are valid (AutoAttack's standard version needs >= 4).

Every attack's budget follows the run's ``steps`` x ``restarts`` (``budgets``): iterative attacks take
``steps`` iterations, AutoAttack's parts ``steps`` iterations, and the black-box Square attack
``QUERIES_PER_STEP x steps x restarts`` queries (DeepFool keeps its own 50 steps: it is cheap), so the paper's protocol (100 x 10) gives AutoAttack
exactly its published budgets (100 iterations, 5,000 queries) and a small run is small throughout. A
row's config and label say what ran; an AutoAttack below its published budgets says so in its label.
"""
from __future__ import annotations

from robrep.attacks.base import Attack
from robrep.attacks.external import FoolboxAttack, TorchattacksAttack
from robrep.attacks.pgd import PGD
from robrep.registry import ATTACKS, SUITES


QUERIES_PER_STEP = 5  # Square's queries per PGD step-and-restart of the run: 100 x 10 -> 5,000 (published)
PUBLISHED = {"steps": 100, "n_queries": 5000}  # AutoAttack's standard budgets (Croce & Hein 2020)


def budgets(steps: int, restarts: int) -> dict:
    """The budgets of the non-PGD attacks for a run of ``steps`` x ``restarts``."""
    return {"steps": steps, "n_queries": QUERIES_PER_STEP * steps * restarts}


def _autoattack(n_classes: int, steps: int, restarts: int) -> TorchattacksAttack:
    b = budgets(steps, restarts)
    reduced = "" if all(b[k] >= v for k, v in PUBLISHED.items()) else ", reduced budget"
    if n_classes >= 4:
        return TorchattacksAttack(
            "AutoAttackStandard", {"n_classes": n_classes, **b},
            label=f"AutoAttack-standard(APGD-CE {b['steps']}, APGD-T {b['steps']}, FAB-T {b['steps']}, "
                  f"Square {b['n_queries']}{reduced})")
    return TorchattacksAttack(
        "BinaryAutoAttack", b,
        label=f"AutoAttack-binary(APGD-CE {b['steps']}, FAB {b['steps']}, Square {b['n_queries']}{reduced})")


def _norm(norm: str) -> str:
    """The threat model an attack factory was asked for, in any usual spelling; refused unless linf or l2."""
    from robrep.rows.layout import norm_name

    return norm_name(norm)


@SUITES.register("native")
def native(n_classes: int, *, steps: int = 100, restarts: int = 10, norm: str = "linf", loss: str = "ce") -> list[Attack]:
    """robrep's own PGD: any iterate of any restart that flips the decision breaks the point."""
    return [PGD(steps=steps, restarts=restarts, norm=norm, loss=loss)]


# Every attack of the torchattacks and foolbox suites, registered as ``suite/name`` (an attack factory, as a
# plugin's: fn(n_classes, *, steps, restarts, norm) -> Attack); a suite is the list of its attacks' names.
def _attack(suite: str, name: str):
    def register(factory):
        ATTACKS.register(f"{suite}/{name}", factory)
        return factory
    return register


@_attack("torchattacks", "PGD")
def ta_pgd(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """torchattacks' PGD (PGDL2 for L2), random start, step 2.5 eps / steps, restarts re-seeded on the points still
    robust."""
    l2 = _norm(norm) == "l2"
    return TorchattacksAttack("PGDL2" if l2 else "PGD", {"steps": steps, "rel_alpha": 2.5, "random_start": True},
                              restarts=restarts, norm=_norm(norm))


@_attack("torchattacks", "APGD-CE")
def ta_apgd(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """torchattacks' APGD with the cross-entropy loss (Croce & Hein 2020), its own restarts; L-inf or L2."""
    return TorchattacksAttack("APGD", {"loss": "ce", "steps": steps, "n_restarts": restarts}, label="APGD-CE",
                              norm=_norm(norm))


@_attack("torchattacks", "APGD-DLR")
def ta_apgd_dlr(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """torchattacks' untargeted APGD with the DLR margin loss (Croce & Hein 2020; AutoAttack's "plus" version runs
    it beside the targeted one), its own restarts; L-inf or L2. Three classes or more (DLR's denominator is the
    gap between the largest and the third-largest logit)."""
    if n_classes < 3:
        raise ValueError(f"APGD-DLR needs three classes or more, the task has {n_classes}")
    return TorchattacksAttack("APGD", {"loss": "dlr", "steps": steps, "n_restarts": restarts}, label="APGD-DLR",
                              norm=_norm(norm))


ta_apgd_dlr.min_classes = 3  # the suites leave it out of tasks with fewer classes


@_attack("torchattacks", "FAB")
def ta_fab(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """torchattacks' untargeted FAB: a minimal-perturbation attack; L-inf or L2."""
    return TorchattacksAttack("FAB", {"multi_targeted": False, "n_classes": n_classes, "steps": steps,
                                      "n_restarts": 1}, kind="minimal", norm=_norm(norm))


@_attack("torchattacks", "Square")
def ta_square(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """torchattacks' Square: black-box, 5 x steps x restarts queries (5,000 at the default budget); L-inf or L2."""
    return TorchattacksAttack("Square", {"n_queries": budgets(steps, restarts)["n_queries"], "n_restarts": 1},
                              kind="black-box", norm=_norm(norm))


@_attack("torchattacks", "AutoAttack")
def ta_autoattack(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """AutoAttack: the standard version for >= 4 classes, the binary-safe APGD-CE + FAB + Square for fewer;
    L-inf or L2 (every part in the run's norm, as AutoAttack's L2 version)."""
    attack = _autoattack(n_classes, steps, restarts)
    attack.norm = _norm(norm)
    return attack


@_attack("foolbox", "LinfPGD")
def fb_pgd(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """foolbox's PGD (LinfPGD, or L2PGD), random start, restarts re-seeded on the points still robust."""
    name = "L2PGD" if _norm(norm) == "l2" else "LinfPGD"
    return FoolboxAttack(name, {"steps": steps, "rel_stepsize": 2.5 / steps, "random_start": True},
                         restarts=restarts, norm=_norm(norm))


@_attack("foolbox", "FGSM")
def fb_fgsm(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """foolbox's FGSM: one signed-gradient step of the full radius (L2: FGM, one gradient step of the radius)."""
    l2 = _norm(norm) == "l2"
    return FoolboxAttack("FGM" if l2 else "FGSM", {}, kind="single-step", norm=_norm(norm))


@_attack("foolbox", "LinfDeepFoolAttack")
def fb_deepfool(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """foolbox's DeepFool (L-inf, or L2), its own 50 steps whatever the run's (it stops at the boundary: cheap, and
    with fewer steps it leaves robust points unexplored)."""
    name = "L2DeepFoolAttack" if _norm(norm) == "l2" else "LinfDeepFoolAttack"
    return FoolboxAttack(name, {"steps": 50, "candidates": min(10, n_classes), "overshoot": 0.02},
                         kind="minimal", norm=_norm(norm))


@_attack("foolbox", "LinfBasicIterativeAttack")
def fb_bim(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """foolbox's basic iterative attack (L-inf, or L2; no random start)."""
    name = "L2BasicIterativeAttack" if _norm(norm) == "l2" else "LinfBasicIterativeAttack"
    return FoolboxAttack(name, {"steps": steps, "rel_stepsize": 2.5 / steps}, norm=_norm(norm))


@_attack("foolbox", "DDN")
def fb_ddn(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "l2") -> Attack:
    """foolbox's DDN (decoupled direction and norm, Rony et al. 2019): an L2 minimal-perturbation attack, ``steps``
    iterations, the radius as its starting norm. L2 only."""
    if _norm(norm) != "l2":
        raise ValueError("DDN is an L2 attack: use it with --norm l2")
    return FoolboxAttack("DDNAttack", {"steps": steps, "init_epsilon": 1.0, "gamma": 0.05}, kind="minimal",
                         norm="l2")


fb_ddn.norms = ("l2",)  # the threat models it runs in (the others: both)

@_attack("native", "APGD-CE")
def native_apgd_ce(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """robrep's APGD on the cross-entropy (Croce & Hein 2020), every restart of a point in one batch."""
    from robrep.attacks.apgd import APGD

    return APGD(steps=steps, restarts=restarts, loss="ce", norm=_norm(norm))


@_attack("native", "APGD-DLR")
def native_apgd_dlr(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """robrep's untargeted APGD on the DLR margin loss (three classes or more), restarts in one batch."""
    from robrep.attacks.apgd import APGD

    if n_classes < 3:
        raise ValueError(f"APGD-DLR needs three classes or more, the task has {n_classes}")
    return APGD(steps=steps, restarts=restarts, loss="dlr", norm=_norm(norm))


native_apgd_dlr.min_classes = 3


@_attack("native", "APGD-T")
def native_apgd_t(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """robrep's targeted APGD on the DLR loss as AutoAttack's standard version runs it (one restart per target,
    the n_classes - 1 classes with the largest clean logits as targets), every target of a point in one batch.
    Four classes or more (the targeted DLR's denominator needs the fourth-largest logit)."""
    from robrep.attacks.apgd import APGD

    if n_classes < 4:
        raise ValueError(f"APGD-T needs four classes or more, the task has {n_classes}")
    return APGD(steps=steps, restarts=1, loss="dlr-targeted", n_targets=n_classes - 1, norm=_norm(norm))


native_apgd_t.min_classes = 4


@_attack("native", "FAB-T")
def native_fab_t(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> Attack:
    """robrep's targeted FAB as AutoAttack's standard version runs it (one run per target, no random start, the
    n_classes - 1 classes with the largest clean logits as targets), every target of a point in one batch."""
    from robrep.attacks.fab import FAB

    return FAB(steps=steps, n_targets=n_classes - 1, norm=_norm(norm))

# a suite's attacks under each threat model. Under L2 foolbox's single-step FGM is replaced by DDN: clipped to
# [0, 1] pixels, one L2 gradient step leaves a good share of the robust points short of half the radius (the
# exploration check refuses such rows), where DDN searches the ball. Under L2 torchattacks adds the untargeted
# APGD-DLR: an attack suite written outside the project broke points at the L2 ball's edge with it that every
# other attack left robust (benchmarks/outside_suite.py); under L-inf it never found such a point.
SUITE_ATTACKS = {
    "torchattacks": {"linf": ("PGD", "APGD-CE", "FAB", "Square", "AutoAttack"),
                     "l2": ("PGD", "APGD-CE", "APGD-DLR", "FAB", "Square", "AutoAttack")},
    "foolbox": {"linf": ("LinfPGD", "FGSM", "LinfDeepFoolAttack", "LinfBasicIterativeAttack"),
                "l2": ("LinfPGD", "DDN", "LinfDeepFoolAttack", "LinfBasicIterativeAttack")},
}


def _registered(suite: str, n_classes: int, steps: int, restarts: int, norm: str) -> list[Attack]:
    return [ATTACKS.create(f"{suite}/{name}", n_classes, steps=steps, restarts=restarts, norm=norm)
            for name in SUITE_ATTACKS[suite][_norm(norm)]
            if getattr(ATTACKS.get(f"{suite}/{name}"), "min_classes", 0) <= n_classes]


@SUITES.register("torchattacks")
def torchattacks_suite(n_classes: int, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> list[Attack]:
    """torchattacks: PGD with restarts, APGD-CE, untargeted FAB, Square, and AutoAttack, L-inf or L2 (standard for >= 4
    classes, the binary-safe APGD-CE + FAB + Square for fewer; see ``robrep.attacks.external.COMPOSITIONS``),
    at its published budgets with the default 100 x 10 (``budgets``)."""
    return _registered("torchattacks", n_classes, steps, restarts, norm)


@SUITES.register("foolbox")
def foolbox_suite(n_classes: int, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> list[Attack]:
    """foolbox: PGD (with re-seeded restarts), FGSM, DeepFool and the basic iterative attack, in the run's norm
    (under L2: L2PGD, DDN, L2 DeepFool, L2 basic iterative)."""
    return _registered("foolbox", n_classes, steps, restarts, norm)


@SUITES.register("plugins")
def plugins_suite(n_classes: int, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> list[Attack]:
    """Every attack installed by a plugin (entry point group robrep.attacks)."""
    from robrep.plugins import report_failure

    attacks = []
    for name in ATTACKS.list():
        if ATTACKS.origin(name) == "built-in":
            continue
        try:  # a broken plugin attack is reported and skipped, never fatal
            attack = ATTACKS.create(name, n_classes, steps=steps, restarts=restarts, norm=norm)
            if not isinstance(attack, Attack):
                raise TypeError(f"returned {type(attack).__name__}, not a robrep.attacks.Attack")
        except Exception as e:
            report_failure(ATTACKS, name, f"{type(e).__name__}: {e}")
            continue
        attacks.append(attack)
    return attacks


def suite_attacks(names, n_classes: int, *, steps: int, restarts: int, norm: str, loss: str = "ce") -> list[Attack]:
    """The attacks of the suites ``names``, in order. ``loss`` is robrep's PGD's (the native suite's): ``ce``,
    ``margin`` or ``ce+margin``; the other suites' attacks have their own."""
    attacks = []
    for name in names:
        options = {"loss": loss} if name == "native" else {}
        for attack in SUITES.create(name, n_classes, steps=steps, restarts=restarts, norm=norm, **options):
            attack.suite = name
            attacks.append(attack)
    return attacks
