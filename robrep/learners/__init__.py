"""Representation learners, registered by name: ``vae``, ``beta-vae``, ``se-random``, ``se-adversarial``."""
from __future__ import annotations

import dataclasses

from robrep.learners.smooth import (
    SEAdversarialConfig, SEConfig, SmoothEncoder, SmoothEncoderAdversarial, adversarial_selection,
    random_selection, w2_squared, wd_gamma,
)
from robrep.learners.vae import VAE, BetaVAE, BetaVAEConfig, VAEConfig, kl_to_prior
from robrep.registry import LEARNERS


def create_learner(name: str, **config):
    """Build an untrained learner; ``config`` holds fields of its config dataclass."""
    cls = LEARNERS.get(name)
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(
            f"learner {name!r} has no config field(s) {', '.join(unknown)}; its fields are: {', '.join(sorted(known))}"
        )
    return cls(cls.config_class(**config))


def list_learners(pattern: str = "*") -> list[str]:
    return LEARNERS.list(pattern)


__all__ = [
    "VAE", "BetaVAE", "SmoothEncoder", "SmoothEncoderAdversarial",
    "VAEConfig", "BetaVAEConfig", "SEConfig", "SEAdversarialConfig",
    "create_learner", "list_learners", "wd_gamma", "w2_squared", "kl_to_prior",
    "random_selection", "adversarial_selection",
]
