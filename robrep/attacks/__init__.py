"""Attacks on probe∘encoder, registered by name."""
from robrep.attacks.base import Attack, AttackResult
from robrep.attacks.pgd import PGD
from robrep.registry import ATTACKS

ATTACKS.register("pgd-linf", lambda **kw: PGD(norm="linf", **kw))
ATTACKS.register("pgd-l2", lambda **kw: PGD(norm="l2", **kw))

__all__ = ["Attack", "AttackResult", "PGD", "ATTACKS"]
