"""Random convolutional features: a plain torch module that robrep benchmarks as it is.

Nothing here imports robrep, and there is no config class: robrep finds the encoder through
the entry point in pyproject.toml, builds it (passing ``shape``, the data set's (C, H, W),
because the constructor asks for it), and never trains it. It declares the normalisation it
expects, and robrep applies it in front of the module, so attacks stay in [0, 1] pixels.
"""
from __future__ import annotations

import torch
from torch import nn


class RandomFeatures(nn.Module):
    """Random ReLU features of a fixed random convolution, average-pooled to 4 x 4 (no training)."""

    # the encoder sees (x - 0.5) / 0.5, inputs in [-1, 1]; one value serves every channel
    preprocessing = {"mean": 0.5, "std": 0.5}

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), width: int = 64, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)  # the same features wherever it is built
        self.conv = nn.Conv2d(shape[0], width, kernel_size=5, stride=2, padding=2)
        with torch.no_grad():
            fan_in = shape[0] * 5 * 5
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) / fan_in**0.5)
            self.conv.bias.copy_(0.1 * torch.randn(width, generator=gen))
        self.pool = nn.AdaptiveAvgPool2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> (N, width * 16) features."""
        return self.pool(torch.relu(self.conv(x))).flatten(1)
