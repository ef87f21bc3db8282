"""beta-TCVAE (Chen, Li, Grosse, Duvenaud: Isolating Sources of Disentanglement in VAEs, NeurIPS 2018).

The ELBO's KL term split into index-code mutual information, total correlation and dimension-wise KL, with the
total correlation weighted by beta:

    L = E1 + (log q(z|x) - log q(z)) + beta (log q(z) - sum_j log q(z_j)) + (sum_j log q(z_j) - log p(z))

at a sample z ~ q(z|x), the aggregate posterior q(z) estimated on the minibatch by minibatch-weighted sampling
(the paper's estimator, as its reference implementation computes it: log q(z) ~ logsumexp_m log q(z | x_m)
- log(N M), N the training set's size and M the minibatch's). beta = 6 as in the paper's experiments.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from robrep.learners.vae import VAE, VAEConfig
from robrep.registry import LEARNERS

LOG_2PI = math.log(2 * math.pi)


def log_normal(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) per dimension (broadcasting)."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar))


def tc_decomposition(z, mu, logvar, dataset_size: int) -> dict[str, torch.Tensor]:
    """Per example: the mutual information, total correlation and dimension-wise KL terms at sample z (N, d),
    by minibatch-weighted sampling."""
    m = z.shape[0]
    pairwise = log_normal(z[:, None, :], mu[None, :, :], logvar[None, :, :])  # (M, M, d): log q(z_i,j | x_m)
    log_norm = math.log(dataset_size * m)
    log_qz = torch.logsumexp(pairwise.sum(2), dim=1) - log_norm  # (M,)
    log_prod_qzj = (torch.logsumexp(pairwise, dim=1) - log_norm).sum(1)  # (M,)
    log_qzx = log_normal(z, mu, logvar).sum(1)
    log_pz = log_normal(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    return {"mi": log_qzx - log_qz, "tc": log_qz - log_prod_qzj, "dwkl": log_prod_qzj - log_pz}


@dataclass
class BetaTCVAEConfig(VAEConfig):
    RANGES: ClassVar[dict[str, tuple[float, float, bool]]] = {"beta": (0, math.inf, True)}
    beta: float = 6.0  # weight of the total correlation


class BetaTCVAE(VAE):
    """beta-TCVAE: the VAE with its total correlation weighted by beta (Chen et al. 2018)."""

    config_class = BetaTCVAEConfig
    name = "beta-tcvae"
    dataset_size = 60000  # N of the estimator; set from the training split by ``prepare``

    def prepare(self, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> None:
        """Told the training split before training: its size is the estimator's N."""
        self.dataset_size = int(images.shape[0])

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        mu, logvar = self.encode(x)
        z = mu + (0.5 * logvar).exp() * (torch.randn_like(mu) if noise is None else noise)
        parts = {"recon": self.data_fidelity(x, z), **tc_decomposition(z, mu, logvar, self.dataset_size)}
        parts["tc"] = self.config.beta * parts["tc"]
        parts = {k: v.mean() for k, v in parts.items()}
        return {"loss": sum(parts.values()), **parts}


LEARNERS.register("beta-tcvae", BetaTCVAE)
