"""Contrastive learners: ``simclr`` (Chen, Kornblith, Norouzi, Hinton, ICML 2020) and its adversarially trained
counterpart ``rocl`` (Kim, Tack, Hwang: Adversarial Self-Supervised Contrastive Learning, NeurIPS 2020).

The encoder is the VAE's (``robrep.nets``), its ``mu`` head the representation; a two-layer projection head on
top of it carries the NT-Xent loss (temperature 0.5) and is thrown away for the probes, as in SimCLR. Written
here rather than taken from a library (``lightly`` has NT-Xent and SimCLR transforms): the loss is ten lines,
the transforms have to suit 28 x 28 digits, and the whole training must run batched on torch tensors on the
learner's device; a dependency would bring its own torchvision-PIL pipeline for no gain.

**Augmentations for digits** (``augment``): a random affine map per image (rotation up to 15 degrees, scale
0.8 to 1.1, shift up to 10% of the image) and pixel noise, batched on tensors. There is no colour distortion,
SimCLR's strongest augmentation on natural images: it would teach the representation to ignore colour, which
is the label of ColorMNIST's colour task. So on ColorMNIST the representation may keep colour; the colour task's
clean accuracy on the board says how much it does.

**RoCL**: each step attacks the first view with L-inf PGD (``attack_steps`` steps in a ball of ``attack_eps``,
random start) to maximise its NT-Xent loss against the second view (an instance-wise attack: no labels), and
trains on both pairs, L = NT-Xent(t1(x), t2(x)) + NT-Xent(t1(x)^adv, t2(x)): the self-supervised analogue of
the Smooth Encoder's adversarial selection.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from robrep.data.base import PIXELS
from robrep.ascent import ascent
from robrep.learners.vae import VAEConfig
from robrep.nets import build_nets
from robrep.registry import LEARNERS


def augment(x: torch.Tensor, config) -> torch.Tensor:
    """A random view of each image of x (N, C, H, W) in [0, 1]: an affine map (rotation, scale, shift; zero
    padding, the digits' background) and Gaussian pixel noise, clipped to [0, 1]."""
    n = x.shape[0]
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(config.max_rotation)
    scale = config.min_scale + torch.rand(n, device=x.device) * (config.max_scale - config.min_scale)
    shift = (torch.rand(n, 2, device=x.device) * 2 - 1) * 2 * config.max_shift  # grid units: the image is 2 wide
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    view = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (view + config.pixel_noise * torch.randn_like(view)).clamp(*PIXELS)


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent per pair (N,): each of the 2N projections must pick out its partner among the other 2N - 1
    (the mean of the two directions)."""
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = (z @ z.T) / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    per = F.cross_entropy(sim, partner, reduction="none")
    return 0.5 * (per[:n] + per[n:])


@dataclass
class SimCLRConfig(VAEConfig):
    RANGES: ClassVar[dict[str, tuple[float, float, bool]]] = {
        "temperature": (0, math.inf, False), "max_rotation": (0, 180, True), "min_scale": (0, math.inf, False),
        "max_scale": (0, math.inf, False), "max_shift": (0, 0.5, True), "pixel_noise": (0, math.inf, True)}
    batch_size: int = 256  # contrastive losses want many negatives
    epochs: int = 50
    temperature: float = 0.5
    projection_dim: int = 64
    max_rotation: float = 15.0  # degrees
    min_scale: float = 0.8
    max_scale: float = 1.1
    max_shift: float = 0.1  # fraction of the image
    pixel_noise: float = 0.05


class SimCLR(nn.Module):
    """SimCLR: NT-Xent between two augmented views of each image, through a projection head (Chen et al. 2020)."""

    config_class = SimCLRConfig
    name = "simclr"
    bounds = PIXELS

    def __init__(self, config: SimCLRConfig | None = None):
        super().__init__()
        self.config = c = config or self.config_class()
        self.encoder, _ = build_nets(c.arch, c.shape, c.latent_dim, c.hidden)
        self.projection = nn.Sequential(nn.Linear(c.latent_dim, c.latent_dim * 2), nn.ReLU(),
                                        nn.Linear(c.latent_dim * 2, c.projection_dim))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, zeros): the representation, and a log-variance of 0 (no posterior; nothing downstream reads it)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.config.shape:
            raise ValueError(f"{self.name} expects inputs of shape (N, {', '.join(map(str, self.config.shape))}), "
                             f"got {tuple(x.shape)}")
        mu, _ = self.encoder(x)
        return mu, torch.zeros_like(mu)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encoder(x)
        return self.projection(mu) + 0.0 * logvar.sum()  # the unused head stays in the graph (for DDP)

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return augment(x, self.config), augment(x, self.config)

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        a, b = self.views(x)
        contrastive = nt_xent(self.project(a), self.project(b), self.config.temperature).mean()
        return {"loss": contrastive, "nt_xent": contrastive}


@dataclass
class RoCLConfig(SimCLRConfig):
    RANGES: ClassVar[dict[str, tuple[float, float, bool]]] = {"attack_eps": (0, 1, False)}
    attack_eps: float = 0.1  # L-inf radius of the training attack (the boards' headline radius on MNIST)
    attack_steps: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attack_steps < 1:
            raise ValueError(f"attack_steps must be >= 1, got {self.attack_steps}")


class RoCL(SimCLR):
    """Adversarial contrastive learning: SimCLR plus an instance-wise PGD attack on the contrastive loss
    (Kim, Tack, Hwang 2020, RoCL)."""

    config_class = RoCLConfig
    name = "rocl"

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        c = self.config
        a, b = self.views(x)
        with torch.no_grad():
            target = self.project(b)
        a_adv = ascent(lambda v: nt_xent(self.project(v), target, c.temperature), a, c.attack_eps,
                            c.attack_steps, self.bounds)
        clean = nt_xent(self.project(a), self.project(b), c.temperature).mean()
        attacked = nt_xent(self.project(a_adv), self.project(b), c.temperature).mean()
        return {"loss": clean + attacked, "nt_xent": clean, "nt_xent_adv": attacked}


LEARNERS.register("simclr", SimCLR)
LEARNERS.register("rocl", RoCL)
