"""Deterministic autoencoders: ``ae`` (Hinton and Salakhutdinov 2006) and ``dae`` (denoising; Vincent et al. 2008).

The same encoder and decoder nets as the VAE (``robrep.nets``); the representation is the encoder's ``mu`` head.
No posterior: ``encode`` reports a log-variance of 0 beside it, which nothing downstream reads (probes and attacks
use ``mu``). The reconstruction loss is the VAE's E1 (Bernoulli by default), of ``decoder(mu)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from robrep.learners.vae import VAE, VAEConfig
from robrep.registry import LEARNERS


@dataclass
class AEConfig(VAEConfig):
    pass


class AE(VAE):
    """Deterministic autoencoder, L = E1(x, decoder(mu(x))) (Hinton and Salakhutdinov, Science 2006)."""

    config_class = AEConfig
    name = "ae"

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, zeros): the code, and a log-variance of 0 (no posterior; nothing downstream reads it)."""
        mu, _ = super().encode(x)
        return mu, torch.zeros_like(mu)

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        """The input the encoder sees in training (the denoising autoencoder corrupts it)."""
        return x

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mu, logvar = VAE.encode(self, self.corrupt(x))
        recon = self.data_fidelity(x, mu).mean()
        # the unused log-variance head stays in the graph (zero gradient): DistributedDataParallel needs every
        # parameter to take part in the loss
        return {"loss": recon + 0.0 * logvar.sum(), "recon": recon}


@dataclass
class DAEConfig(AEConfig):
    RANGES: ClassVar[dict[str, tuple[float, float, bool]]] = {"noise_std": (0, math.inf, False)}
    noise_std: float = 0.3  # additive Gaussian corruption of the pixels, clipped to [0, 1]


class DAE(AE):
    """Denoising autoencoder: reconstruct x from x + N(0, noise_std^2), clipped (Vincent et al., ICML 2008)."""

    config_class = DAEConfig
    name = "dae"

    def corrupt(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.config.noise_std * torch.randn_like(x)).clamp(*self.bounds)


LEARNERS.register("ae", AE)
LEARNERS.register("dae", DAE)
