"""Selection mechanisms of the Smooth Encoder (method.md section 4)."""
import pytest
import torch

import robrep
from robrep.learners import adversarial_selection, random_selection, wd_gamma

EPS = 0.1


@pytest.fixture(scope="module")
def trained(mnist5k):
    """A VAE trained for a few epochs on the real digits: a non-trivial encoder to attack."""
    learner = robrep.train("vae", mnist5k, out=False, max_steps=120, seed=0)
    for p in learner.parameters():
        p.grad = None
    return learner, mnist5k.test.batch(slice(0, 200))


def test_adversarial_selection_stays_in_the_ball_and_in_the_unit_box(trained):
    learner, x = trained
    x_b = adversarial_selection(learner.encode, x, EPS, steps=10)
    assert (x_b - x).abs().max() <= EPS + 1e-6
    assert x_b.min() >= 0 and x_b.max() <= 1
    assert not x_b.requires_grad
    assert (x_b - x).abs().max() > EPS / 2  # it did move


def test_adversarial_selection_finds_larger_distances_than_random(trained):
    learner, x = trained
    gamma = 10.0

    def dist(x_b):
        with torch.no_grad():
            return wd_gamma(*learner.encode(x), *learner.encode(x_b), gamma)

    torch.manual_seed(0)
    adv = dist(adversarial_selection(learner.encode, x, EPS, steps=10,
                                     distance=lambda *a: wd_gamma(*a, gamma)))
    rnd = dist(random_selection(x, EPS))
    # WD_gamma is offset by entropies; compare the excess over the coupling of x with itself
    base = dist(x)
    assert (adv - base).mean() > 3 * (rnd - base).mean()
    assert (adv >= rnd).float().mean() > 0.95


def test_selection_leaves_parameter_gradients_untouched(trained):
    learner, x = trained
    for p in learner.parameters():
        assert p.grad is None
    adversarial_selection(learner.encode, x[:32], EPS, steps=3)
    assert all(p.grad is None for p in learner.parameters())
    # and existing gradients are not modified either
    for p in learner.parameters():
        p.grad = torch.ones_like(p)
    adversarial_selection(learner.encode, x[:32], EPS, steps=3)
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in learner.parameters())
    for p in learner.parameters():
        p.grad = None


def test_the_se_loss_sees_a_detached_fictive_point(mnist5k):
    se = robrep.create_learner("se-adversarial", selection_steps=2)
    x = mnist5k.train.batch(slice(0, 8))
    x_b = se.select(x)
    assert not x_b.requires_grad and (x_b - x).abs().max() <= se.config.selection_eps + 1e-6
    rnd = robrep.create_learner("se-random").select(x)
    assert (rnd - x).abs().max() <= 0.1 + 1e-6 and rnd.min() >= 0 and rnd.max() <= 1
