"""Attacks on probe∘encoder, and the suites that group them, registered by name."""
from robrep.attacks.base import Attack, AttackResult
from robrep.attacks.external import FoolboxAttack, TorchattacksAttack
from robrep.attacks.pgd import PGD
from robrep.registry import ATTACKS, SUITES



# An attack factory is fn(n_classes, *, steps, restarts, norm) -> Attack, like a suite's, so
# plugin attacks (entry point group robrep.attacks) run in the "plugins" suite.
@ATTACKS.register("pgd-linf")
def pgd_linf(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "linf") -> PGD:
    """robrep's L-inf PGD (default 100 steps x 10 restarts, step 2.5 eps / steps)."""
    return PGD(norm="linf", steps=steps, restarts=restarts)


@ATTACKS.register("pgd-l2")
def pgd_l2(n_classes: int = 10, *, steps: int = 100, restarts: int = 10, norm: str = "l2") -> PGD:
    """robrep's L2 PGD (default 100 steps x 10 restarts, step 2.5 eps / steps)."""
    return PGD(norm="l2", steps=steps, restarts=restarts)


from robrep.attacks.suites import suite_attacks  # noqa: E402  (registers the suites)

__all__ = ["Attack", "AttackResult", "PGD", "TorchattacksAttack", "FoolboxAttack", "ATTACKS", "SUITES",
           "suite_attacks"]
