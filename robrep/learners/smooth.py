"""Smooth Encoders: the paper's learner and its selection mechanisms.

L_SE = E1(x_a) + E2 + WD_gamma, where x_b is a fictive point near x_a chosen by a
selection mechanism (random, or adversarial PGD). The decoder only ever sees x_a,
so its gradient is exactly the VAE's.
"""
from __future__ import annotations

import contextlib

import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from robrep.learners.vae import VAE, VAEConfig
from robrep.registry import LEARNERS

Encode = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def wd_gamma(
    mu_a: torch.Tensor, logvar_a: torch.Tensor, mu_b: torch.Tensor, logvar_b: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Entropic Wasserstein coupling term between diagonal Gaussians, per example (N,).

    min over couplings Q of gamma/2 E_Q ||z_a - z_b||^2 - H[Q], in closed form
    (the Smooth Encoder's coupling term), computed from log-variances so it stays finite.
    """
    var_a, var_b = logvar_a.exp(), logvar_b.exp()
    k = gamma * (0.5 * (logvar_a + logvar_b)).exp()  # gamma * s_a * s_b
    u = torch.sqrt(1 + 4 * k.pow(2))
    u_minus_1 = 4 * k.pow(2) / (u + 1)  # = u - 1 without cancellation for small k
    per_dim = 0.5 * gamma * ((mu_a - mu_b).pow(2) + var_a + var_b) - 0.5 * (
        u_minus_1 - torch.log(u + 1) + math.log(2.0) + logvar_a + logvar_b
    )
    d = mu_a.shape[-1]
    return per_dim.sum(dim=-1) - d * (math.log(2 * math.pi) + 1)


def optimal_cross_covariance(logvar_a: torch.Tensor, logvar_b: torch.Tensor, gamma: float) -> torch.Tensor:
    """c_i = (u_i - 1) / (2 gamma): the cross-covariance of the minimising coupling, per dimension."""
    k = gamma * (0.5 * (logvar_a + logvar_b)).exp()
    u = torch.sqrt(1 + 4 * k.pow(2))
    return 4 * k.pow(2) / (u + 1) / (2 * gamma)


def w2_squared(mu_a, logvar_a, mu_b, logvar_b) -> torch.Tensor:
    """Squared 2-Wasserstein distance between diagonal Gaussians, per example: ||mu_a - mu_b||^2 + ||s_a - s_b||^2."""
    return (mu_a - mu_b).pow(2).sum(-1) + ((0.5 * logvar_a).exp() - (0.5 * logvar_b).exp()).pow(2).sum(-1)


def random_selection(x: torch.Tensor, eps: float, bounds: tuple[float, float]) -> torch.Tensor:
    """x_b = clip(x_a + U(-eps, eps)^D, bounds)."""
    return (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(*bounds)


SELECTION_STARTS = ("warm", "random")


def default_step_size(eps: float, steps: int, start: str = "random") -> float:
    """The selection's sign-step size when none is given. From a warm start (the last visit's point): 0.25 eps
    per step (Zheng et al. 2020, ATTA: 2/255 at radius 8/255). From a random start: 1.25 eps for a single step
    (FGSM-RS, Wong et al. 2020, "Fast is better than free"), 2.5 eps / L for L > 1 steps (the paper's PGD)."""
    if start == "warm":
        return 0.25 * eps
    return 1.25 * eps if steps == 1 else 2.5 * eps / steps


def adversarial_selection(
    encode: Encode,
    x: torch.Tensor,
    eps: float,
    steps: int,
    step_size: float | None = None,
    distance: Callable[..., torch.Tensor] = w2_squared,
    start: torch.Tensor | None = None,
    target: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    bounds: tuple[float, float],
) -> torch.Tensor:
    """PGD in the L-inf ball of radius ``eps`` around x maximising distance(q(z|x), q(z|x_b)).

    Random start (the distance has zero gradient at x_b = x), or ``start`` (projected onto the ball and
    ``bounds``, the learner's input bounds; ``robrep.learners.fast`` warm-starts from the last visit's point), sign
    steps of size ``step_size`` (default ``default_step_size``), projection onto the ball and the bounds after
    every step.
    Returns, per example, the iterate with the largest distance, detached. ``target``: q(z|x)'s (mu, logvar)
    when the caller has them (the SE's loss does), which saves encoding x again. Gradients are taken with
    respect to x_b only (torch.autograd.grad), so the encoder's parameters never receive a gradient from the
    selection.
    """
    step_size = default_step_size(eps, steps) if step_size is None else step_size
    with torch.no_grad():
        mu_a, logvar_a = encode(x) if target is None else (target[0].detach(), target[1].detach())
    lo, hi = (x - eps).clamp(min=bounds[0]), (x + eps).clamp(max=bounds[1])
    x_b = random_selection(x, eps, bounds) if start is None else torch.min(torch.max(start.detach(), lo), hi)
    best, best_d = x_b, torch.full((x.shape[0],), -math.inf, device=x.device)
    for i in range(steps + 1):
        if i < steps:
            x_b.requires_grad_(True)
            with torch.enable_grad():
                d = distance(mu_a, logvar_a, *encode(x_b))  # (N,)
                grad = torch.autograd.grad(d.sum(), x_b)[0]
        else:  # the last iterate is only scored
            with torch.no_grad():
                d, grad = distance(mu_a, logvar_a, *encode(x_b)), None
        with torch.no_grad():
            better = d > best_d
            best_d = torch.where(better, d, best_d)
            best = torch.where(better.view(-1, *[1] * (x.dim() - 1)), x_b, best)
            if grad is None:
                break
            x_b = torch.min(torch.max(x_b + step_size * grad.sign(), lo), hi)
    return best.detach()


@dataclass
class SEConfig(VAEConfig):
    RANGES: ClassVar[dict[str, tuple[float, float, bool]]] = {"gamma": (0, math.inf, False),
                                                              "selection_eps": (0, 1, True)}
    gamma: float = 50.0  # coupling strength: the knob that matters most (50 chosen on mnist5k)
    selection_eps: float = 0.1  # L-inf radius of the selection ball


class SmoothEncoder(VAE):
    """Smooth Encoder with random selection of the fictive point x_b."""

    config_class = SEConfig
    name = "se-random"

    def select(self, x: torch.Tensor, target=None) -> torch.Tensor:
        """The fictive point x_b for each x (``target``: q(z|x)'s (mu, logvar), for selections that use it)."""
        return random_selection(x, self.config.selection_eps, self.bounds)

    def regulariser(self, x, mu, logvar):
        x_b = self.select(x, target=(mu.detach(), logvar.detach())).detach()
        mu_b, logvar_b = self.encode(x_b)
        prior = 0.5 * (mu.pow(2) + mu_b.pow(2) + logvar.exp() + logvar_b.exp()).sum(dim=1)  # E2
        return {"prior": prior, "coupling": wd_gamma(mu, logvar, mu_b, logvar_b, self.config.gamma)}


@dataclass
class SEAdversarialConfig(SEConfig):
    # The default selection is warm-started: each training example keeps its fictive point across
    # epochs and takes one step of 0.25 x the radius from it per visit (ATTA-style). It kept the paper's L = 20
    # worst case on the MLP (97%) and the ConvNet (101%) at about 2x the VAE's cost per step (CHANGELOG.md). The
    # paper's selection is selection_start = "random", selection_steps = 20; every published config pins both.
    LEGACY: ClassVar[dict[str, Any]] = {"selection_start": "random"}  # every SE run before the warm start
    # chosen for the warm-started selection by `robrep sweep` on mnist5k-valid (never the test digits): gamma
    # 10 / 50 / 100 x selection radius 0.05 / 0.1 / 0.2, the worst case at radius 0.1 over all three suites
    # (CHANGELOG.md). se-random and the paper's figures keep gamma = 50.
    gamma: float = 100.0
    selection_steps: int = 1  # PGD steps per visit (the paper's L: 20 and 50, from a random start)
    selection_step_size: float | None = None  # default: default_step_size (by the start and the steps)
    selection_objective: str = "wd"  # distance PGD maximises: "wd" (WD_gamma, the loss's own term) or "w2"
    selection_start: str = "warm"  # "warm" (the last visit's point) or "random" (uniform in the ball)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.selection_steps < 1:
            raise ValueError(f"selection_steps must be >= 1, got {self.selection_steps}")
        if self.selection_objective not in ("wd", "w2"):
            raise ValueError(f"selection_objective must be 'wd' or 'w2', got {self.selection_objective!r}")
        if self.selection_start not in SELECTION_STARTS:
            raise ValueError(f"selection_start must be one of {SELECTION_STARTS}, got {self.selection_start!r}")
        if self.selection_step_size is not None and not self.selection_step_size > 0:
            raise ValueError(f"selection_step_size must be > 0 (or unset), got {self.selection_step_size}")


class SmoothEncoderAdversarial(SmoothEncoder):
    """Smooth Encoder with adversarial (PGD) selection: ``selection_steps`` sign steps that maximise the
    objective, from a warm start (default) or a random one (the paper's, with L = 20 or 50).

    Warm start: during training each example continues from where its last visit's selection ended (a first
    visit starts at random). The points are kept as int8 offsets from x (1/127 of the radius) in a buffer
    outside the state dict, so a checkpoint is an ordinary SE; under several ranks each rank keeps the points of
    the examples it visited. Outside training, or when the loss gets no example indices, the start is random.
    """

    config_class = SEAdversarialConfig
    name = "se-adversarial"
    wants_index = True  # robrep.train passes each minibatch's indices into the training split (warm starts)

    def __init__(self, config=None, **overrides):
        super().__init__(config, **overrides)
        self._points: torch.Tensor | None = None  # (n, *shape) int8 offsets from x, in 1/127 of the radius
        self._visited: torch.Tensor | None = None  # (n,) bool
        self._index: torch.Tensor | None = None

    def distance(self) -> Callable[..., torch.Tensor]:
        """What the selection maximises: WD_gamma (the loss's own coupling term) or the squared W2 distance."""
        c = self.config
        if c.selection_objective == "w2":
            return w2_squared

        def distance(mu_a, lv_a, mu_b, lv_b):
            return wd_gamma(mu_a, lv_a, mu_b, lv_b, c.gamma)
        return distance

    def step_size(self) -> float:
        """The selection's sign-step size."""
        c = self.config
        if c.selection_step_size is not None:
            return c.selection_step_size
        return default_step_size(c.selection_eps, c.selection_steps, c.selection_start)

    def loss(self, x, noise=None, index=None):
        """The SE's loss; ``index`` (each example's row in the training split) lets the selection warm-start."""
        with self.visiting(index):
            return super().loss(x, noise)

    @contextlib.contextmanager
    def visiting(self, index: torch.Tensor | None):
        """While open, ``select`` on a minibatch knows its examples' rows in the training split (``index``), so
        in training it starts from each example's kept point."""
        self._index = index
        try:
            yield self
        finally:
            self._index = None

    def kept(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """For the training examples ``index``: whether each was visited, and the point each visit left as an
        offset from its example (None when no point is kept: the selection starts at random)."""
        visited = torch.zeros(len(index), dtype=torch.bool)
        if self._points is None:
            return visited, None
        inside = index < len(self._visited)
        visited[inside] = self._visited[index[inside].to(self._visited.device)].cpu()
        offsets = torch.zeros((len(index), *self._points.shape[1:]))
        offsets[inside] = self._points[index[inside].to(self._points.device)].float().cpu()
        return visited, offsets * (self.config.selection_eps / 127)

    def select(self, x: torch.Tensor, start: torch.Tensor | None = None, target=None) -> torch.Tensor:
        c = self.config
        if c.selection_start == "warm" and start is None and self._index is not None and self.training:
            return self._warm_select(x, target)
        return adversarial_selection(self.encode, x, c.selection_eps, c.selection_steps, self.step_size(),
                                     self.distance(), start=start, target=target, bounds=self.bounds)

    def _warm_select(self, x: torch.Tensor, target) -> torch.Tensor:
        """The selection from each example's kept point (a random one on its first visit); keeps the result."""
        index, eps = self._index.to(x.device), self.config.selection_eps
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
        fresh = random_selection(x, eps, self.bounds)
        x_b = self.select(x, start=torch.where(seen, kept, fresh), target=target)
        self._points[index] = ((x_b - x) * (127 / eps)).round().clamp(-127, 127).to(torch.int8)
        self._visited[index] = True
        return x_b


LEARNERS.register("se-random", SmoothEncoder)
LEARNERS.register("se-adversarial", SmoothEncoderAdversarial)
