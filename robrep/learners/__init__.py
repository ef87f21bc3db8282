"""Representation learners, registered by name: ``vae``, ``beta-vae``, ``se-random``, ``se-adversarial``, the
fast-selection SEs ``se-fgsm`` and ``se-warm`` (``robrep.learners.fast``), and the reference families the Smooth
Encoder is compared with: ``ae`` and ``dae`` (``autoencoders``), ``beta-tcvae`` (``tcvae``), ``simclr`` and
``rocl`` (``contrastive``), ``supervised`` and ``supervised-at`` (``supervised``: they train on labels) and
``random-init`` (``baselines``). Each one's family and paper: ``robrep.learners.cards``.

The registry also holds third-party entries (entry point group ``robrep.encoders``): robrep
learners, which robrep trains, and plain encoders, which it benchmarks as they are (see
``robrep.encoders``).
"""
from __future__ import annotations

import dataclasses

from robrep.learners.smooth import (
    SEAdversarialConfig, SEConfig, SmoothEncoder, SmoothEncoderAdversarial, adversarial_selection,
    random_selection, w2_squared, wd_gamma,
)
from robrep.learners.vae import VAE, BetaVAE, BetaVAEConfig, VAEConfig, config_from_record, config_record, kl_to_prior
from robrep.learners.fast import SEFastConfig, SEWarmConfig, SmoothEncoderFGSM, SmoothEncoderWarm
from robrep.learners.autoencoders import AE, DAE
from robrep.learners.tcvae import BetaTCVAE
from robrep.learners.contrastive import RoCL, SimCLR
from robrep.learners.supervised import Supervised, SupervisedAT
from robrep.learners.baselines import RandomInit
from robrep.learners.cards import Card, card
from robrep.provenance import code_identity
from robrep.registry import LEARNERS
from robrep.validate import check_fields


def create_learner(name: str, **config):
    """Build an untrained learner; ``config`` holds fields of its config dataclass."""
    cls = LEARNERS.get(name)
    if getattr(cls, "config_class", None) is None:
        raise ValueError(f"{name!r} is a plain encoder ({LEARNERS.origin(name)}), not a robrep learner: robrep "
                         "benchmarks it as it is and never trains it (robrep bench --learner " + name + ")")
    known = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(
            f"learner {name!r} has no config field(s) {', '.join(unknown)}; its fields are: {', '.join(sorted(known))}"
        )
    config = check_fields(cls.config_class, config, f"learner {name!r} config")  # types, before ranges
    return cls(cls.config_class(**config))


FROM_DATA = ("shape",)  # config fields set from the data set, never by an override


def check_overrides(name: str, overrides: dict) -> dict:
    """``overrides`` of learner ``name``'s config, refused if they set a field the data set sets (ValueError)."""
    fixed = sorted(set(overrides) & set(FROM_DATA))
    if fixed:
        raise ValueError(f"learner {name!r}: {', '.join(fixed)} is set from the data set's images (C, H, W) and "
                         "cannot be overridden; choose the data set instead")
    return overrides


def list_learners(pattern: str = "*") -> list[str]:
    return LEARNERS.list(pattern)


def learner_source(name: str) -> str:
    """Where a registered learner comes from, as result rows record it."""
    from robrep._version import __version__

    origin = LEARNERS.origin(name)
    if origin == "built-in":
        return f"robrep {__version__}"
    return f"entry point robrep.encoders:{name} = {LEARNERS.target(name)} ({origin})"


def learner_code(name: str) -> dict[str, str]:
    """What a trained checkpoint of learner ``name`` depends on besides its config (part of the cache key)."""
    origin = LEARNERS.origin(name)
    return code_identity(LEARNERS.get(name), package="" if origin == "built-in" else origin)


__all__ = [
    "VAE", "BetaVAE", "SmoothEncoder", "SmoothEncoderAdversarial",
    "VAEConfig", "BetaVAEConfig", "SEConfig", "SEAdversarialConfig", "SmoothEncoderFGSM", "SmoothEncoderWarm",
    "SEFastConfig", "SEWarmConfig", "AE", "DAE", "BetaTCVAE", "SimCLR", "RoCL", "Supervised", "SupervisedAT",
    "RandomInit", "Card", "card",
    "create_learner", "list_learners", "learner_source", "learner_code", "wd_gamma", "w2_squared", "kl_to_prior",
    "random_selection", "adversarial_selection", "config_record", "config_from_record",
]
