"""Encoder / decoder pairs shared by every learner.

Encoders map x of shape (N, C, H, W) in [0, 1] to (mu, logvar), each (N, d).
Decoders map z of shape (N, d) to pixel logits of shape (N, C, H, W).
Supported inputs: 28x28x1 (MNIST), 28x28x3 (ColorMNIST), 64x64x3 (CelebA), and any
square size that halves down to at most 8 pixels for the ConvNet.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from robrep.fastconv import InputGradConv2d

ARCHS = ("mlp", "conv", "resnet18")


class MLPEncoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, hidden: tuple[int, ...] = (400, 400)):
        super().__init__()
        layers, width = [nn.Flatten()], math.prod(shape)
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)  # (N, d), (N, d)
        return mu, logvar


class MLPDecoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, hidden: tuple[int, ...] = (400, 400)):
        super().__init__()
        layers, width = [], latent_dim
        for h in reversed(hidden):
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers += [nn.Linear(width, math.prod(shape)), nn.Unflatten(1, shape)]
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


def _conv_plan(shape: tuple[int, int, int]) -> tuple[list[int], int]:
    """Channels of the stride-2 convolutions and the final spatial size: 28 -> 14 -> 7, 64 -> 32 -> 16 -> 8 -> 4."""
    c, h, w = shape
    if h != w:
        raise ValueError(f"the ConvNet expects square images, got {h}x{w}")
    n, size = 0, h
    while size > 8 and size % 2 == 0:
        size //= 2
        n += 1
    if n == 0:
        raise ValueError(f"the ConvNet needs an even image size above 8 pixels, got {h}x{w}")
    half = max(1, n // 2)
    return [32 * 2 ** min(i // half, 1) for i in range(n)], size  # 28: [32, 64]; 64: [32, 32, 64, 64]


class ConvEncoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, fc: int = 256):
        super().__init__()
        channels, size = _conv_plan(shape)
        layers, cin = [], shape[0]
        for cout in channels:
            layers += [InputGradConv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
            cin = cout
        layers += [nn.Flatten(), nn.Linear(cin * size * size, fc), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(fc, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar


class ConvDecoder(nn.Module):
    def __init__(self, shape: tuple[int, int, int], latent_dim: int, fc: int = 256):
        super().__init__()
        channels, size = _conv_plan(shape)
        channels = channels[::-1]
        layers = [
            nn.Linear(latent_dim, fc), nn.ReLU(),
            nn.Linear(fc, channels[0] * size * size), nn.ReLU(),
            nn.Unflatten(1, (channels[0], size, size)),
        ]
        for cin, cout in zip(channels, channels[1:]):
            layers += [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
        layers += [nn.ConvTranspose2d(channels[-1], shape[0], 4, stride=2, padding=1)]  # logits
        self.body = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3 x 3 convolutions with batch norm, and the shortcut (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18Encoder(nn.Module):
    """ResNet-18 with the usual CIFAR stem (one 3 x 3 convolution, no max pooling), as RobustSSL's encoders:
    four stages of two basic blocks (64, 128, 256, 512 channels), global average pooling, then the (mu, logvar)
    head. Batch norm runs in eval mode whenever the encoder is frozen."""

    def __init__(self, shape: tuple[int, int, int], latent_dim: int):
        super().__init__()
        layers, cin = [nn.Conv2d(shape[0], 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
        for i, cout in enumerate((64, 128, 256, 512)):
            layers += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(512, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.head(self.body(x)).chunk(2, dim=1)
        return mu, logvar


def build_nets(arch: str, shape: tuple[int, int, int], latent_dim: int, hidden: tuple[int, ...] = (400, 400)):
    """(encoder, decoder) for ``arch`` in ARCHS; ``hidden`` are the MLP widths (the ConvNet and ResNet-18 ignore
    them)."""
    shape = tuple(int(s) for s in shape)
    if arch == "mlp":
        return MLPEncoder(shape, latent_dim, hidden), MLPDecoder(shape, latent_dim, hidden)
    if arch == "conv":
        return ConvEncoder(shape, latent_dim), ConvDecoder(shape, latent_dim)
    if arch == "resnet18":  # the ConvNet's decoder: generative learners need one, contrastive ones drop it
        return ResNet18Encoder(shape, latent_dim), ConvDecoder(shape, latent_dim)
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
