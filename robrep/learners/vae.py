"""The VAE and the beta-VAE.

Every learner is an ``nn.Module`` built from one config dataclass. The loss is
``E1 (data fidelity) + regulariser``; subclasses override exactly one hook:
the beta-VAE only adds its weight, the Smooth Encoders override ``regulariser``.
"""
from __future__ import annotations

import dataclasses
import math

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robrep.data.base import PIXELS
from robrep.nets import ARCHS, build_nets
from robrep.registry import LEARNERS

LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass
class VAEConfig:
    """Hyperparameters of a VAE; every field is saved with the weights (see ``config_record``)."""

    # Fields added after runs were published, with the value every earlier run had: a config records such a
    # field only when it differs from that value, so adding a field renames no cached or published run
    # (run ids hash the record), and a checkpoint that lacks it is loaded with that value.
    LEGACY: ClassVar[dict[str, Any]] = {}
    # range of each number field a subclass adds: (low, high, low included); every number must be finite
    RANGES: ClassVar[dict[str, tuple[float, float, bool]]] = {"obs_var": (0, math.inf, False), "lr": (0, math.inf, False)}

    shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W) of the inputs, set from the data set
    arch: str = "mlp"  # "mlp" (784-400-400 style) or "conv"
    latent_dim: int = 32
    hidden: tuple[int, ...] = (400, 400)  # MLP widths
    likelihood: str = "bernoulli"  # "bernoulli" (MNIST-like) or "gaussian" with variance obs_var
    obs_var: float = 0.05  # v of N(x; g(z), v I) for the gaussian likelihood
    lr: float = 1e-3  # Adam
    batch_size: int = 128
    epochs: int = 30

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        for name in ("latent_dim", "batch_size", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        ranges: dict[str, tuple[float, float, bool]] = {}
        for cls in reversed(type(self).__mro__):  # every class's ranges, a subclass's last
            ranges.update(vars(cls).get("RANGES", {}))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            if f.name in ranges and value is not None:
                low, high, closed = ranges[f.name]
                if not ((low <= value) if closed else (low < value)) or value > high:
                    raise ValueError(f"{f.name} must be in {'[' if closed else '('}{low:g}, {high:g}], got {value!r}"
                                     if high != math.inf else
                                     f"{f.name} must be {'>=' if closed else '>'} {low:g}, got {value!r}")


def config_record(config: VAEConfig) -> dict[str, Any]:
    """A learner config as checkpoints, run ids and result rows record it: every field, except a ``LEGACY``
    field at its legacy value."""
    record = dataclasses.asdict(config)
    for name, value in getattr(type(config), "LEGACY", {}).items():  # plugins' configs may lack it
        if record.get(name) == value:
            del record[name]
    return record


def config_from_record(config_class: type, record: dict[str, Any]) -> dict[str, Any]:
    """The fields a recorded config (``config_record``, or one saved before a field existed) stands for."""
    return {**getattr(config_class, "LEGACY", {}), **record}


def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per example: 1/2 sum (mu^2 + s^2 - log s^2 - 1). (N,)"""
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=1)


class VAE(nn.Module):
    """Variational autoencoder, L = E1 + KL."""

    config_class = VAEConfig
    name = "vae"
    bounds = PIXELS  # its inputs (the Smooth Encoder's selection stays inside them)

    def __init__(self, config: VAEConfig | None = None, **overrides):
        super().__init__()
        config = config or self.config_class()
        self.config = dataclasses.replace(config, **overrides) if overrides else config
        c = self.config
        self.encoder, self.decoder = build_nets(c.arch, c.shape, c.latent_dim, c.hidden)

    # -- the representation -------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) of q(z|x), each (N, d), for x of shape (N, C, H, W) in [0, 1]."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.config.shape:
            raise ValueError(
                f"{self.name} expects inputs of shape (N, {', '.join(map(str, self.config.shape))}), "
                f"got {tuple(x.shape)}"
            )
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Mean of p(x|z) in [0, 1], (N, C, H, W)."""
        return torch.sigmoid(self.decoder(z))

    # -- the loss -----------------------------------------------------------
    def data_fidelity(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """E1 = -log p(x|z) up to a constant, per example. (N,)"""
        logits = self.decoder(z)
        if self.config.likelihood == "bernoulli":
            nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
        else:
            nll = (x - torch.sigmoid(logits)).pow(2) / (2 * self.config.obs_var)
        return nll.flatten(1).sum(dim=1)

    def regulariser(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> dict[str, torch.Tensor]:
        """The terms added to E1, each per example (N,). The hook subclasses override."""
        return {"kl": getattr(self.config, "beta", 1.0) * kl_to_prior(mu, logvar)}

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Batch-mean loss and its named parts. ``noise`` is the reparameterisation u ~ N(0, I), (N, d)."""
        mu, logvar = self.encode(x)
        if noise is None:
            noise = torch.randn_like(mu)
        z = mu + (0.5 * logvar).exp() * noise
        parts = {"recon": self.data_fidelity(x, z), **self.regulariser(x, mu, logvar)}
        parts = {k: v.mean() for k, v in parts.items()}
        return {"loss": sum(parts.values()), **parts}


@dataclass
class BetaVAEConfig(VAEConfig):
    RANGES: ClassVar[dict[str, tuple[float, float, bool]]] = {"beta": (0, math.inf, True)}
    beta: float = 4.0  # weight of the KL term


class BetaVAE(VAE):
    """beta-VAE, L = E1 + beta KL (Higgins et al. 2017)."""

    config_class = BetaVAEConfig
    name = "beta-vae"


LEARNERS.register("vae", VAE)
LEARNERS.register("beta-vae", BetaVAE)
