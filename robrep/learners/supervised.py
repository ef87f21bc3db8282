"""References that use labels: ``supervised`` (cross-entropy on one task's labels) and ``supervised-at`` (PGD
adversarial training, Madry, Makelov, Schmidt, Tsipras, Vladu: Towards Deep Learning Models Resistant to
Adversarial Attacks, ICLR 2018).

Not representation learners in the paper's sense: they see the labels of ``task`` (default ``digit``) while
training, so every place they appear says so (``robrep.learners.cards``). The encoder is the VAE's
(``robrep.nets``); a linear classifier on its ``mu`` head is trained with it and thrown away: the representation
is the penultimate layer, ``mu``, and the bench fits its own probes on it like on any other encoder.
"""
from __future__ import annotations

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


@dataclass
class SupervisedConfig(VAEConfig):
    task: str = "digit"  # whose labels train it
    n_classes: int = 10  # of that task (checked against its labels before training)
    epochs: int = 20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be >= 2, got {self.n_classes}")


class Supervised(nn.Module):
    """An encoder trained with cross-entropy through a linear classifier on one task's labels; its penultimate
    layer is the representation."""

    config_class = SupervisedConfig
    name = "supervised"
    bounds = PIXELS
    wants_index = True  # the loss looks up the minibatch's labels

    def __init__(self, config: SupervisedConfig | None = None):
        super().__init__()
        self.config = c = config or self.config_class()
        self.encoder, _ = build_nets(c.arch, c.shape, c.latent_dim, c.hidden)
        self.classifier = nn.Linear(c.latent_dim, c.n_classes)
        self.labels: torch.Tensor | None = None

    def prepare(self, images: torch.Tensor, labels: dict[str, torch.Tensor]) -> None:
        """Told the training split before training: the labels of its task."""
        c = self.config
        if c.task not in labels:
            raise ValueError(f"{self.name}: the data set has no task {c.task!r} (its tasks: {', '.join(labels)})")
        y = labels[c.task].long()
        if int(y.max()) >= c.n_classes or int(y.min()) < 0:
            raise ValueError(f"{self.name}: task {c.task!r} has labels 0..{int(y.max())}, more than n_classes = "
                             f"{c.n_classes}; set n_classes")
        self.labels = y.to(images.device)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, zeros): the representation, and a log-variance of 0 (no posterior; nothing downstream reads it)."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.config.shape:
            raise ValueError(f"{self.name} expects inputs of shape (N, {', '.join(map(str, self.config.shape))}), "
                             f"got {tuple(x.shape)}")
        mu, _ = self.encoder(x)
        return mu, torch.zeros_like(mu)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.encoder(x)
        return self.classifier(mu) + 0.0 * logvar.sum()  # the unused head stays in the graph (for DDP)

    def trained_on(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The inputs the classifier is trained on: x itself."""
        return x

    def loss(self, x: torch.Tensor, noise: torch.Tensor | None = None, index: torch.Tensor | None = None):
        if self.labels is None or index is None:
            raise RuntimeError(f"{self.name} trains on labels: robrep.train calls prepare() first")
        y = self.labels[index]
        logits = self.logits(self.trained_on(x, y))
        ce = F.cross_entropy(logits, y)
        return {"loss": ce, "ce": ce, "accuracy": (logits.argmax(1) == y).float().mean().detach()}


@dataclass
class SupervisedATConfig(SupervisedConfig):
    RANGES: ClassVar[dict[str, tuple[float, float, bool]]] = {"attack_eps": (0, 1, False)}
    attack_eps: float = 0.1  # L-inf radius of the training attack (the boards' headline radius on MNIST)
    attack_steps: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attack_steps < 1:
            raise ValueError(f"attack_steps must be >= 1, got {self.attack_steps}")


class SupervisedAT(Supervised):
    """PGD adversarial training (Madry et al. 2018): the classifier is trained on the worst input PGD finds in
    the L-inf ball of ``attack_eps`` around each training image (``attack_steps`` steps, random start)."""

    config_class = SupervisedATConfig
    name = "supervised-at"

    def trained_on(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = self.config
        return ascent(lambda v: F.cross_entropy(self.logits(v), y, reduction="none"), x, c.attack_eps,
                           c.attack_steps, self.bounds)


LEARNERS.register("supervised", Supervised)
LEARNERS.register("supervised-at", SupervisedAT)
