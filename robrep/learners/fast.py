"""Smooth Encoders with cheap selection, registered under their own names (the cheap selections compared with
the paper's L = 20 PGD):

- ``se-fgsm``: one sign step from a uniform random start, of 1.25 x the selection radius (Wong et al. 2020,
  "Fast is better than free": FGSM from a random start with step 1.25 eps). It kept the L = 20 SE's worst
  case on the MLP, and 76% of it on the ConvNet (CHANGELOG.md: cheaper selection).
- ``se-warm``: the warm-started selection (``se-adversarial``'s default selection; see
  ``SmoothEncoderAdversarial``): ``selection_steps`` (default 1) steps of 0.25 x the radius per visit from each
  example's last point. It kept the L = 20 SE's worst case on the MLP (97%) and the ConvNet (101%).

Both are ``se-adversarial`` with other defaults: the same PGD (``adversarial_selection``), objective and warm
start; their step is ``selection_rel_step`` x the radius, and their gamma 50. ``se-warm`` trains bit-identically
to ``se-adversarial`` with gamma = 50.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from robrep.learners.smooth import SEAdversarialConfig, SmoothEncoderAdversarial
from robrep.registry import LEARNERS


@dataclass
class SEFastConfig(SEAdversarialConfig):
    gamma: float = 50.0  # as the comparison with the paper's selection ran them (se-adversarial's default is 100)
    selection_steps: int = 1
    selection_start: str = "random"
    selection_rel_step: float = 1.25  # step = this x selection_eps (unless selection_step_size is given)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.selection_rel_step > 0:
            raise ValueError(f"selection_rel_step must be > 0, got {self.selection_rel_step}")


@dataclass
class SEWarmConfig(SEFastConfig):
    LEGACY: ClassVar[dict[str, Any]] = {"selection_start": "warm"}  # se-warm has always started warm
    selection_start: str = "warm"
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


LEARNERS.register("se-fgsm", SmoothEncoderFGSM)
LEARNERS.register("se-warm", SmoothEncoderWarm)
