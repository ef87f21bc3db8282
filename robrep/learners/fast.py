"""Smooth Encoders with cheap adversarial selection: what "adversarial training for free" did for supervised
adversarial training, for the SE's fictive point x_b.

- ``se-fgsm``: one sign step from a uniform random start, of 1.25 x the selection radius (Wong et al. 2020,
  "Fast is better than free": FGSM from a random start with step 1.25 eps), instead of L = 20 steps (the same
  as ``se-adversarial`` with ``selection_steps=1``). It kept the L = 20 SE's worst case on the MLP, and 75% of
  it on the ConvNet (README).
- ``se-warm``: each training example keeps its fictive point across epochs and takes ``selection_steps`` (default
  1) steps of 0.25 x the radius from it per visit (Zheng et al. 2020, ATTA, whose default step is 2/255 at radius
  8/255); a first visit starts at random. The points are kept as int8 offsets (1/127 of the radius) in a buffer
  outside the state dict, so a checkpoint is an ordinary SE; under several ranks each keeps the points of the
  examples it visited. It kept the L = 20 SE's worst case on the MLP (97%) and on the ConvNet (101%) at 1.9x to
  2.1x the VAE's cost per training step (README).

Both use the SE's own PGD (``adversarial_selection``) and objective; only the start and the budget differ.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robrep.learners.smooth import SEAdversarialConfig, SmoothEncoderAdversarial, random_selection
from robrep.registry import LEARNERS


@dataclass
class SEFastConfig(SEAdversarialConfig):
    selection_steps: int = 1
    selection_rel_step: float = 1.25  # step = this x selection_eps (unless selection_step_size is given)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.selection_rel_step > 0:
            raise ValueError(f"selection_rel_step must be > 0, got {self.selection_rel_step}")


@dataclass
class SEWarmConfig(SEFastConfig):
    selection_rel_step: float = 0.25


class SmoothEncoderFGSM(SmoothEncoderAdversarial):
    """SE with single-step selection from a random start (FGSM-RS)."""

    config_class = SEFastConfig
    name = "se-fgsm"

    def step_size(self) -> float:
        c = self.config
        return c.selection_step_size if c.selection_step_size is not None else c.selection_rel_step * c.selection_eps


class SmoothEncoderWarm(SmoothEncoderFGSM):
    """SE whose selection continues, per training example, from where its last visit ended (ATTA-style)."""

    config_class = SEWarmConfig
    name = "se-warm"
    wants_index = True  # robrep.train passes each minibatch's indices into the training split

    def __init__(self, config):
        super().__init__(config)
        self._points: torch.Tensor | None = None  # (n, *shape) int8 offsets from x, in 1/127 of the radius
        self._visited: torch.Tensor | None = None  # (n,) bool
        self._index: torch.Tensor | None = None

    def loss(self, x, noise=None, index=None):
        self._index = index
        try:
            return super().loss(x, noise)
        finally:
            self._index = None

    def select(self, x: torch.Tensor, start: torch.Tensor | None = None, target=None) -> torch.Tensor:
        index, eps = self._index, self.config.selection_eps
        if index is None or not self.training:
            return super().select(x, start, target)  # outside training (or without indices): as se-fgsm
        index = index.to(x.device)
        need = int(index.max()) + 1
        if self._points is None or len(self._points) < need:
            grow = max(need, 2 * len(self._points) if self._points is not None else need)
            points = torch.zeros((grow, *x.shape[1:]), dtype=torch.int8, device=x.device)
            visited = torch.zeros(grow, dtype=torch.bool, device=x.device)
            if self._points is not None:
                points[:len(self._points)], visited[:len(self._visited)] = self._points, self._visited
            self._points, self._visited = points, visited
        seen = self._visited[index].view(-1, *[1] * (x.dim() - 1))
        kept = x + self._points[index].float() * (eps / 127)
        fresh = random_selection(x, eps)
        x_b = super().select(x, start=torch.where(seen, kept, fresh), target=target)
        self._points[index] = ((x_b - x) * (127 / eps)).round().clamp(-127, 127).to(torch.int8)
        self._visited[index] = True
        return x_b


LEARNERS.register("se-fgsm", SmoothEncoderFGSM)
LEARNERS.register("se-warm", SmoothEncoderWarm)
