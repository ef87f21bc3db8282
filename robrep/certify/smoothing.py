"""L2 certificates by randomized smoothing (Cohen, Rosenfeld, Kolter, Certified Adversarial Robustness via
Randomized Smoothing, ICML 2019).

A separate measure from the bounds of ``robrep.certify.bounds``: it certifies the **smoothed** classifier
g(x) = argmax_c P(f(x + e) = c), e ~ N(0, sigma^2 I), built from probe∘encoder f, not f itself. Its guarantee
is statistical: per point, with probability at least 1 - alpha over the noise drawn, if ``certify`` returns class
c with radius R, then g predicts c everywhere in the L2 ball of radius R around x. The procedure is the paper's
CERTIFY: ``n0`` noisy copies pick the class, ``n`` fresh ones estimate its probability, whose one-sided
Clopper-Pearson lower bound p gives R = sigma * Phi^-1(p); it abstains where p <= 1/2.

The noise is added to the image as given to the encoder (no clipping: the smoothed classifier is defined on the
whole space, and the input bounds only shrink the ball that needs certifying).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ABSTAIN = -1


@dataclass
class Smoothed:
    """Per point: the smoothed classifier's class (ABSTAIN where it abstains) and its certified L2 radius (0
    where it abstains), and the procedure's parameters (what the guarantee is stated with)."""
    prediction: torch.Tensor  # (N,) long
    radius: torch.Tensor  # (N,) float64
    sigma: float
    n0: int
    n: int
    alpha: float

    def accuracy(self, y: torch.Tensor, radius: float) -> float:
        """Certified accuracy of the smoothed classifier at L2 ``radius``: the share of points it classifies as
        ``y`` with a certified radius of at least ``radius`` (the paper's definition)."""
        ok = (self.prediction == y.to(self.prediction.device)) & (self.radius >= radius)
        return float(ok.double().mean())


def _counts(model: nn.Module, x: torch.Tensor, sigma: float, num: int, n_classes: int, batch: int,
            generator: torch.Generator) -> torch.Tensor:
    """Per point, how often f(x + noise) gave each class over ``num`` noisy copies: (N, n_classes)."""
    counts = torch.zeros(len(x), n_classes, dtype=torch.long)
    per = max(1, batch // max(len(x), 1))  # copies of every point per forward pass
    done = 0
    with torch.no_grad():
        while done < num:
            k = min(per, num - done)
            noise = torch.randn((k, *x.shape), generator=generator, dtype=x.dtype) * sigma
            noisy = (x.cpu()[None] + noise).reshape(-1, *x.shape[1:]).to(x.device)
            pred = model(noisy).argmax(1).reshape(k, len(x)).cpu()
            counts += torch.nn.functional.one_hot(pred, n_classes).sum(0)
            done += k
    return counts


def certify_smoothed(model: nn.Module, x: torch.Tensor, sigma: float, *, n0: int = 100, n: int = 10_000,
                     alpha: float = 0.001, batch: int = 10_000, seed: int = 0) -> Smoothed:
    """The paper's CERTIFY for every point of x (see the module docstring). ``batch``: noisy inputs per forward
    pass."""
    from scipy.stats import beta, norm

    if sigma <= 0 or n0 < 1 or n < 1 or not 0 < alpha < 1:
        raise ValueError(f"randomized smoothing needs sigma > 0, n0 >= 1, n >= 1 and 0 < alpha < 1; got sigma="
                         f"{sigma}, n0={n0}, n={n}, alpha={alpha}")
    model = model.eval()
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[1])
    gen = torch.Generator().manual_seed(seed)
    guess = _counts(model, x, sigma, n0, n_classes, batch, gen).argmax(1)  # selection: its own noise
    counts = _counts(model, x, sigma, n, n_classes, batch, gen)
    hits = counts.gather(1, guess[:, None]).squeeze(1).numpy()
    # one-sided Clopper-Pearson lower bound at level 1 - alpha (0 where no copy hit)
    lower = torch.from_numpy(beta.ppf(alpha, hits, n - hits + 1)).nan_to_num(0.0).double()
    sure = lower > 0.5
    radius = torch.where(sure, sigma * torch.from_numpy(norm.ppf(lower.clamp(max=1 - 1e-16).numpy())),
                         torch.zeros_like(lower))
    prediction = torch.where(sure, guess, torch.full_like(guess, ABSTAIN))
    return Smoothed(prediction, radius.clamp(min=0), sigma, n0, n, alpha)
