"""Randomized smoothing against exact answers: for a linear classifier the smoothed classifier is the classifier
itself and its exact certified L2 radius is the distance to the decision boundary; the certificate never exceeds
it, comes close with many samples, abstains near the boundary, and on real digits falls with the radius."""
import math

import pytest
import torch
from torch import nn

from robrep.certify.smoothing import ABSTAIN, certify_smoothed
from robrep.encoders import Encoder
from robrep.probes import ProbedEncoder


def _linear(w=(3.0, -4.0), b=0.5):
    """Two classes split by the line w . x + b = 0 (logits 0 and w . x + b)."""
    lin = nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0], list(w)]))
        lin.bias.copy_(torch.tensor([0.0, b]))
    return ProbedEncoder(Encoder(nn.Sequential(nn.Flatten(), nn.Identity())), lin), torch.tensor(w), b


@pytest.mark.parametrize("sigma", [0.1, 0.3])
def test_the_certified_radius_never_exceeds_the_distance_to_a_linear_boundary_and_comes_close(sigma):
    model, w, b = _linear()
    x = torch.rand(40, 1, 1, 2) * 2 - 1
    distance = ((x.flatten(1) @ w + b).abs() / w.norm()).double()
    s = certify_smoothed(model, x, sigma, n0=100, n=20_000, alpha=0.001, seed=1)
    side = ((x.flatten(1) @ w + b) > 0).long()
    certified = s.prediction != ABSTAIN
    assert (s.prediction[certified] == side[certified]).all()
    assert (s.radius <= distance + 1e-9).all()  # at alpha = 0.001 over 40 points: a failure is a bug
    # with 20,000 samples the bound is within a few hundredths of sigma of the truth where the truth is moderate
    moderate = certified & (distance < 2 * sigma)
    assert moderate.sum() > 3 and ((distance - s.radius)[moderate] < 0.15 * sigma).all()
    # points close to the boundary: abstains (p too near 1/2 to certify anything)
    near = distance < 0.002 * sigma
    assert (s.prediction[near] == ABSTAIN).all()
    assert (s.sigma, s.n0, s.n, s.alpha) == (sigma, 100, 20_000, 0.001)


def test_certified_accuracy_falls_with_the_radius_on_real_digits(mnist5k):
    import robrep
    from robrep.probes import features, train_probe

    torch.manual_seed(0)
    learner = robrep.train("vae", mnist5k, out=False, max_steps=300)
    probe = train_probe(features(learner, mnist5k.train.images), mnist5k.train.labels["digit"], 10)
    model = ProbedEncoder(learner, probe)
    x, y = mnist5k.test.batch(slice(0, 40)), mnist5k.test.labels["digit"][:40]
    s = certify_smoothed(model, x, 0.25, n0=50, n=500, alpha=0.01)
    shares = [s.accuracy(y, r) for r in (0.0, 0.1, 0.25, 0.5, 1.0)]
    assert shares == sorted(shares, reverse=True) and shares[0] > 0.3
    assert s.radius.max() <= 0.25 * 3.0  # sigma * Phi^-1 of a lower bound from 500 samples is below 3 sigma
    with pytest.raises(ValueError, match="sigma > 0"):
        certify_smoothed(model, x, 0.0)
