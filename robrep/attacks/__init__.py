"""Attacks on probe∘encoder, and the suites that group them, registered by name."""
from robrep.attacks.base import Attack, AttackResult
from robrep.attacks.external import FoolboxAttack, TorchattacksAttack
from robrep.attacks.pgd import PGD
from robrep.registry import ATTACKS, SUITES



@ATTACKS.register("pgd-linf")
def pgd_linf(**settings) -> PGD:
    """robrep's L-inf PGD (default 100 steps x 10 restarts, step 2.5 eps / steps)."""
    return PGD(norm="linf", **settings)


@ATTACKS.register("pgd-l2")
def pgd_l2(**settings) -> PGD:
    """robrep's L2 PGD (default 100 steps x 10 restarts, step 2.5 eps / steps)."""
    return PGD(norm="l2", **settings)


from robrep.attacks.suites import suite_attacks  # noqa: E402  (registers the suites)

__all__ = ["Attack", "AttackResult", "PGD", "TorchattacksAttack", "FoolboxAttack", "ATTACKS", "SUITES",
           "suite_attacks"]
