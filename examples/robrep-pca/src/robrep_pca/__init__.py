"""A PCA encoder as a robrep plugin (entry point group ``robrep.encoders``): a robrep *learner*.

A learner is an encoder robrep fits on a data set's training split itself (README, "Your own
encoder"). Its contract:
- an ``nn.Module`` subclass built as ``cls(config)`` from ``cls.config_class``, a dataclass
  with a ``shape`` field (robrep sets it to the data set's (C, H, W));
- ``encode(x) -> (mu, logvar)``, each (N, d), for x of shape (N, C, H, W), float32 in [0, 1];
- either ``loss(x) -> {"loss": ..., ...}`` (robrep trains it with Adam) or, as here,
  ``fit(images, seed=...)`` for learners fitted in closed form (``images`` is the training
  split as float32 (N, C, H, W) in [0, 1], the same range ``encode`` sees);
- everything it needs at inference lives in parameters or buffers, so robrep can save it
  as safetensors and reload it through the registry.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class PCAConfig:
    shape: tuple[int, int, int] = (1, 28, 28)
    latent_dim: int = 32
    logvar: float = 0.0  # constant log-variance reported beside the projection
    max_fit_samples: int = 20000  # a random subset of the training split is enough for the top directions

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)
        if not 1 <= self.latent_dim <= math.prod(self.shape):
            raise ValueError(f"latent_dim must be in [1, {math.prod(self.shape)}], got {self.latent_dim}")


class PCAEncoder(nn.Module):
    """Principal component analysis: mu(x) = V^T (x - mean)."""

    config_class = PCAConfig
    name = "pca"

    def __init__(self, config: PCAConfig | None = None):
        super().__init__()
        self.config = config or PCAConfig()
        dim = math.prod(self.config.shape)
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(dim, self.config.latent_dim))  # (D, d)

    @torch.no_grad()
    def fit(self, images: torch.Tensor, seed: int = 0) -> "PCAEncoder":
        gen = torch.Generator().manual_seed(seed)
        n = images.shape[0]
        if n > self.config.max_fit_samples:
            images = images[torch.randperm(n, generator=gen)[: self.config.max_fit_samples].to(images.device)]
        x = images.flatten(1)  # (N, D), in [0, 1]
        mean = x.mean(0)
        # exact thin SVD of the centred data: (N, D) with N, D of a few thousand is cheap
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        v = vh[: self.config.latent_dim].T  # (D, d)
        v = v * torch.sign(v[v.abs().argmax(0), torch.arange(v.shape[1])])  # fix each direction's sign
        self.mean.copy_(mean)
        self.components.copy_(v)
        return self

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = (x.flatten(1) - self.mean) @ self.components  # (N, d)
        return mu, torch.full_like(mu, self.config.logvar)
