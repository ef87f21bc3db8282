"""The toy discrete model of the paper (figures 2 and 3).

X in {0..nx-1} and Z in {0..nz-1} both live on a circle (omega(t) = cos(2 pi t), so no edges).
A VAE trained on a small multinomial sample only ever scores the encoder rows q(.|x) of the
observed x, so every other row keeps its random initialisation. The smooth encoder (SE) adds an
entropic-OT coupling between q(.|x) and q(.|x') for neighbours x' of each observed x, which
propagates structure into the unobserved rows.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from robrep.io import atomic_write

log = logging.getLogger(__name__)

Kind = Literal["vae", "se"]


@dataclass
class ToyConfig:
    """Settings of the toy experiment; the defaults draw the paper's figure 3 in a few seconds on CPU."""

    nx: int = 40
    nz: int = 40
    # Small enough that many x have zero count: those are the rows a VAE never touches.
    n_samples: int = 30
    # pi(X) as a mixture of von-Mises-like bumps on the circle: (centre in [0,1), concentration, weight).
    target: tuple[tuple[float, float, float], ...] = (
        (0.15, 12.0, 0.45),
        (0.50, 30.0, 0.25),
        (0.75, 8.0, 0.30),
    )
    # Coupling strength in gamma/2 * E_Q C - H[Q], C in [0, 1/4] (circle of length 1): a shift by k z
    # indices costs k^2/32 nats and the entropic blur is nz/sqrt(gamma) = 4 indices. Much larger gamma
    # makes a constant (uninformative) encoder the cheapest way to be smooth.
    gamma: float = 100.0
    sinkhorn_iters: int = 20  # marginals converge to ~1e-10 at gamma=100
    steps: int = 400
    lr: float = 0.1
    seed: int = 0
    # SE neighbour rule, like the paper's random selection x_b = x_a + U(-eps, eps): for each observed
    # i the neighbours are i +- 1..radius on the circle, one drawn per step ("random") or all of them
    # ("both", the exact expectation, 2*radius times the Sinkhorn work). radius=1 is the plain
    # i-1 / i+1 rule; it leaves every row further than one step from the data at initialisation.
    neighbours: Literal["both", "random"] = "random"
    radius: int = 5
    # Fraction of the steps over which the SE coupling term ramps from 0 to 1 (KL-annealing style).
    warmup: float = 0.5
    # Initial encoder/decoder widths: omega/width is a logit, so 0.15 gives a narrow bump at a random
    # place, which makes the rows a VAE leaves untouched visibly random.
    init_width: float = 0.15

    @property
    def eps(self) -> float:
        """Sinkhorn's entropic regulariser: min gamma/2 <Q,C> - H[Q] == gamma/2 * min <Q,C> - eps H[Q]."""
        return 2.0 / self.gamma


@dataclass
class ToyResult:
    """What one trained learner leaves behind. Matrices are probabilities (rows sum to one)."""

    kind: str
    config: ToyConfig
    s: torch.Tensor  # (nx,) data counts
    pi: torch.Tensor  # (nx,) target distribution
    Q: torch.Tensor  # (nx, nz) encoder q(z|x)
    P: torch.Tensor  # (nz, nx) decoder p(x|z)
    p_x: torch.Tensor  # (nx,) model marginal sum_z p(x|z) p(z)
    Q_init: torch.Tensor  # (nx, nz) encoder before training
    losses: list[float]  # loss minimised, per step (for SE the coupling ramps in over warmup)
    elbo: float  # final batch ELBO (sum over the data set, nats)
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    params_init: dict[str, torch.Tensor] = field(default_factory=dict)


def omega(t: torch.Tensor) -> torch.Tensor:
    return torch.cos(2 * math.pi * t)


def target_pi(config: ToyConfig) -> torch.Tensor:
    """pi(X), shape (nx,): each bump is normalised on the grid so the weights are its mass."""
    x = torch.arange(config.nx, dtype=torch.float64) / config.nx
    pi = torch.zeros(config.nx, dtype=torch.float64)
    for centre, kappa, weight in config.target:
        bump = torch.exp(kappa * (omega(x - centre) - 1))  # -1 keeps exp bounded for large kappa
        pi += weight * bump / bump.sum()
    return pi / pi.sum()


def sample_data(config: ToyConfig, pi: torch.Tensor) -> torch.Tensor:
    """s ~ Multinomial(n_samples, pi), shape (nx,), float counts."""
    gen = torch.Generator().manual_seed(config.seed)
    draws = torch.multinomial(pi, config.n_samples, replacement=True, generator=gen)
    return torch.bincount(draws, minlength=config.nx).to(torch.float64)


def circular_cost(n: int) -> torch.Tensor:
    """C[j, j'] = (circular distance / n)^2, shape (n, n), values in [0, 1/4]."""
    d = torch.arange(n)
    diff = (d[:, None] - d[None, :]).abs()
    return (torch.minimum(diff, n - diff).to(torch.float64) / n) ** 2


def sinkhorn(
    log_a: torch.Tensor, log_b: torch.Tensor, cost: torch.Tensor, gamma: float, iters: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropic OT  min_Q gamma/2 <Q, C> - H[Q]  over couplings of a and b, log-domain Sinkhorn.

    log_a: (B, n), log_b: (B, m), cost: (n, m). Returns (value (B,), log_Q (B, n, m)). The
    iterations are unrolled, so the value is differentiable in a and b. The iterations needed grow
    with gamma * max C: at the toy's gamma=100, 20 give marginals to ~1e-10.
    """
    log_k = -0.5 * gamma * cost  # Gibbs kernel exp(-gamma/2 C): the minimiser is diag(e^f) K diag(e^g)
    f = torch.zeros_like(log_a)
    g = torch.zeros_like(log_b)
    if log_k.min() > -700:  # K has no underflow: logsumexp as max-shift + matmul, ~5x faster unrolled
        k = log_k.exp()
        for _ in range(iters):
            shift = g.amax(dim=1, keepdim=True).detach()
            f = log_a - shift - torch.log(torch.exp(g - shift) @ k.T)
            shift = f.amax(dim=1, keepdim=True).detach()
            g = log_b - shift - torch.log(torch.exp(f - shift) @ k)
    else:
        for _ in range(iters):
            f = log_a - torch.logsumexp(log_k + g[:, None, :], dim=2)
            g = log_b - torch.logsumexp(log_k + f[:, :, None], dim=1)
    log_q = f[:, :, None] + log_k + g[:, None, :]  # (B, n, m); columns match b exactly
    # Q * log Q stays 0 where Q underflows, because log_Q itself is finite.
    value = (log_q.exp() * (0.5 * gamma * cost + log_q)).sum(dim=(1, 2))
    return value, log_q


class ToyModel(torch.nn.Module):
    """Encoder rows (mu_i, sigma_i) per x and decoder rows (m_j, v_j) per z; widths via log."""

    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.nx, self.nz = config.nx, config.nz
        gen = torch.Generator().manual_seed(config.seed + 1)  # independent of the data draw
        f64 = dict(dtype=torch.float64)
        # Random centres make the untrained rows look like noise, which is what the VAE leaves off the data.
        self.mu = torch.nn.Parameter(torch.rand(config.nx, generator=gen, **f64))
        self.log_sigma = torch.nn.Parameter(torch.full((config.nx,), math.log(config.init_width), **f64))
        self.m = torch.nn.Parameter(torch.rand(config.nz, generator=gen, **f64))
        self.log_v = torch.nn.Parameter(torch.full((config.nz,), math.log(config.init_width), **f64))

    def log_q(self) -> torch.Tensor:
        """log q(z=j | x=i), shape (nx, nz)."""
        z = torch.arange(self.nz, dtype=torch.float64) / self.nz
        logits = omega(z[None, :] - self.mu[:, None]) / self.log_sigma.exp()[:, None]
        return torch.log_softmax(logits, dim=1)

    def log_p(self) -> torch.Tensor:
        """log p(x=i | z=j), shape (nz, nx)."""
        x = torch.arange(self.nx, dtype=torch.float64) / self.nx
        logits = omega(x[None, :] - self.m[:, None]) / self.log_v.exp()[:, None]
        return torch.log_softmax(logits, dim=1)

    def recon(self, s: torch.Tensor) -> torch.Tensor:
        """Data fidelity sum_i s_i E_q(z|i) log p(i|z), exact expectation over z."""
        obs = s > 0  # index, not multiply: unobserved rows are then outside the graph, gradient exactly 0
        log_lik = self.log_p().T[obs]  # (n_obs, nz): log p(i|j)
        return (s[obs] * (self.log_q()[obs].exp() * log_lik).sum(dim=1)).sum()

    def elbo(self, s: torch.Tensor) -> torch.Tensor:
        """sum_i s_i sum_j q(j|i) [log p(i|j) + log p(j) - log q(j|i)], with p(j) = 1/nz."""
        obs = s > 0
        log_q = self.log_q()[obs]  # (n_obs, nz)
        neg_entropy = (log_q.exp() * log_q).sum(dim=1)
        return self.recon(s) - (s[obs] * (math.log(self.nz) + neg_entropy)).sum()


def _neighbour_pairs(
    s: torch.Tensor, config: ToyConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pairs (i, i') for the SE term. Returns (i (P,), i' (P,), weight (P,)).

    The weights are s_i times the selection probability of i', so "both" is the exact expectation
    of "random" and the coupling term does not grow with the radius.
    """
    obs = torch.nonzero(s > 0).squeeze(1)
    offsets = torch.cat([torch.arange(1, config.radius + 1), -torch.arange(1, config.radius + 1)])
    if config.neighbours == "both":
        i = obs.repeat_interleave(len(offsets))
        off = offsets.repeat(len(obs))
    else:
        i = obs
        off = offsets[torch.randint(len(offsets), (len(obs),), generator=gen)]
    per = len(offsets) if config.neighbours == "both" else 1
    return i, (i + off) % config.nx, s[i] / per


def train_toy(kind: Kind, config: ToyConfig | None = None) -> ToyResult:
    """Train the VAE or the smooth encoder on the toy model with Adam (full batch, exact ELBO)."""
    if kind not in ("vae", "se"):
        raise ValueError(f"unknown toy learner {kind!r}, known ones are 'vae', 'se'")
    config = config or ToyConfig()
    pi = target_pi(config)
    s = sample_data(config, pi)
    model = ToyModel(config)
    params_init = {k: v.detach().clone() for k, v in model.named_parameters()}
    q_init = model.log_q().exp().detach()
    cost = circular_cost(config.nz)
    gen = torch.Generator().manual_seed(config.seed + 2)
    # No weight decay: Adam with an exactly zero gradient leaves a parameter where it is.
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    # Widths shrink towards one-hot rows, where a constant step overshoots the sharp optimum: anneal.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.steps)
    losses = []
    for step in range(config.steps):
        if kind == "vae":
            loss = -model.elbo(s)
        else:
            # L_SE = E1 + E2 + WD_gamma (the Smooth Encoder's loss): the coupling's -H[Q] takes the place of the
            # ELBO's -H[q(.|i)]; E2 is the constant 2 log nz under the uniform prior. Subtracting WD from
            # the full ELBO instead counts the entropy twice and collapses the encoder to uniform rows.
            i, j, w = _neighbour_pairs(s, config, gen)
            log_q = model.log_q()
            ot, _ = sinkhorn(log_q[i], log_q[j], cost, config.gamma, config.sinkhorn_iters)
            # Ramp E2 + WD in: at full strength from the random start the entropy in WD wins before the
            # decoder has learnt anything and the encoder collapses (posterior collapse); ramped, the
            # encoder first becomes informative and is then smoothed.
            ramp = min(1.0, (step + 1) / max(1.0, config.warmup * config.steps))
            loss = -model.recon(s) + ramp * (2 * math.log(config.nz) * s.sum() + (w * ot).sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    with torch.no_grad():
        P = model.log_p().exp()
        result = ToyResult(
            kind=kind,
            config=config,
            s=s,
            pi=pi,
            Q=model.log_q().exp(),
            P=P,
            p_x=P.mean(dim=0),  # uniform prior p(z) = 1/nz
            Q_init=q_init,
            losses=losses,
            elbo=model.elbo(s).item(),
            params={k: v.detach().clone() for k, v in model.named_parameters()},
            params_init=params_init,
        )
    log.info("toy %s: final loss %.3f, ELBO %.3f", kind, losses[-1], result.elbo)
    return result


def encoder_tv(Q: torch.Tensor, rows: torch.Tensor | None = None) -> float:
    """Mean total variation between q(.|i) and q(.|i+1) (circularly) over rows i (bool mask or all).

    In [0, 1]: 0 for a constant encoder, near 1 when neighbouring rows put mass in different places.
    """
    tv = 0.5 * (Q - Q.roll(-1, dims=0)).abs().sum(dim=1)  # (nx,)
    return (tv if rows is None else tv[rows]).mean().item()


def plot_toy(results: dict[str, ToyResult], path: str | os.PathLike) -> Path:
    """Paper figure 3: one row per learner; columns Data, Target, Q, P, Model. Returns the PNG path.

    Every panel has x on the vertical axis: distributions over X are strips (one colour scale per row,
    so they compare), q(z|x) and p(x|z) heatmaps with z across; a row of the figure reads at fixed x.
    """
    # Figure + FigureCanvasAgg directly: no pyplot, so the caller's global backend is untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(13, 3.2 * len(results)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(results), 5, width_ratios=[1, 1, 4, 4, 1])
    for row, (name, r) in enumerate(results.items()):
        strips = [r.s / r.s.sum(), r.pi, r.p_x]
        vmax = max(v.max().item() for v in strips)
        panels = [  # (title, (nx, columns) matrix, strip?)
            (f"Data s(x)/{int(r.s.sum())}", strips[0][:, None], True),
            ("Target π(x)", strips[1][:, None], True),
            ("Q = q(z|x)", r.Q, False),
            ("P = p(x|z)", r.P.T, False),
            ("Model p(x)", strips[2][:, None], True),
        ]
        for col, (title, mat, strip) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            im = ax.imshow(mat.numpy(), aspect="auto", origin="lower", cmap="viridis", vmin=0,
                           vmax=vmax if strip else None, interpolation="nearest")
            ax.set_title(title, fontsize=10)
            if strip:
                ax.set_xticks([])
            else:
                ax.set_xlabel("z index")
                fig.colorbar(im, ax=ax, fraction=0.05)
            if col == 0:
                ax.set_ylabel(f"{name.upper()}\n\nx index", fontsize=11)
            elif col == 2:
                ax.set_ylabel("x index")
            else:
                ax.set_yticklabels([])
        fig.colorbar(im, ax=ax, fraction=0.5, label="probability")  # shared by the three strips
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write(path, buf.getvalue())  # whole or not at all, with the user's file mode
    return path


def run_toy(out_dir: str | os.PathLike, config: ToyConfig | None = None, *, force: bool = False) -> Path:
    """Train VAE and SE, write out_dir/toy.png and out_dir/toy.csv; returns the PNG path. ``out_dir`` is checked
    first (``robrep.folders``): files there robrep did not write are refused unless ``force``."""
    from robrep.folders import check_folder

    out_dir = check_folder(out_dir, "toy", force=force)
    results = {kind: train_toy(kind, config) for kind in ("vae", "se")}
    png = plot_toy(results, out_dir / "toy.png")
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(["learner", "elbo", "tv_all", "tv_unobserved", "n_unobserved"])
    for kind, r in results.items():
        unobserved = r.s == 0
        writer.writerow([kind, f"{r.elbo:.4f}", f"{encoder_tv(r.Q):.4f}",
                         f"{encoder_tv(r.Q, unobserved):.4f}", int(unobserved.sum())])
    atomic_write(out_dir / "toy.csv", buf.getvalue().encode())
    return png
