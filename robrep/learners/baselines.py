"""The baseline with no representation learning: ``random-init``, the architecture's encoder at its random
initialisation, never trained. What a learned representation has to beat: a random network of the same
architecture keeps much of the input's geometry (and its fragility). The other baselines are plugins: PCA
(``examples/robrep-pca``, the best linear code in squared error) and random convolutional features
(``examples/robrep-randfeatures``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robrep.learners.autoencoders import AE, AEConfig
from robrep.registry import LEARNERS


@dataclass
class RandomInitConfig(AEConfig):
    pass


class RandomInit(AE):
    """The encoder net at its random initialisation (PyTorch's default, seeded): no training at all."""

    config_class = RandomInitConfig
    name = "random-init"

    def fit(self, images: torch.Tensor, seed: int = 0) -> "RandomInit":
        """Nothing to fit: the weights stay as the seed drew them."""
        return self


LEARNERS.register("random-init", RandomInit)
