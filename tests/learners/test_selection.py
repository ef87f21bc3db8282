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
    x_b = adversarial_selection(learner.encode, x, EPS, steps=10, bounds=learner.bounds)
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
                                     distance=lambda *a: wd_gamma(*a, gamma), bounds=learner.bounds))
    rnd = dist(random_selection(x, EPS, learner.bounds))
    # WD_gamma is offset by entropies; compare the excess over the coupling of x with itself
    base = dist(x)
    assert (adv - base).mean() > 3 * (rnd - base).mean()
    assert (adv >= rnd).float().mean() > 0.95


def test_selection_leaves_parameter_gradients_untouched(trained):
    learner, x = trained
    for p in learner.parameters():
        assert p.grad is None
    adversarial_selection(learner.encode, x[:32], EPS, steps=3, bounds=learner.bounds)
    assert all(p.grad is None for p in learner.parameters())
    # and existing gradients are not modified either
    for p in learner.parameters():
        p.grad = torch.ones_like(p)
    adversarial_selection(learner.encode, x[:32], EPS, steps=3, bounds=learner.bounds)
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


def test_se_adversarial_starts_warm_by_default_and_keeps_the_papers_pgd():
    from robrep.learners.smooth import default_step_size

    c = robrep.create_learner("se-adversarial").config
    assert (c.selection_start, c.selection_steps, c.gamma, c.selection_eps) == ("warm", 1, 100.0, 0.1)
    assert robrep.create_learner("se-random").config.gamma == robrep.create_learner("se-warm").config.gamma == 50
    assert robrep.create_learner("se-adversarial").step_size() == pytest.approx(0.25 * c.selection_eps)
    paper = robrep.create_learner("se-adversarial", selection_steps=20, selection_start="random")
    assert paper.step_size() == pytest.approx(0.0125)  # the paper's PGD: 2.5 eps / L
    assert default_step_size(0.1, 1) == pytest.approx(0.125)  # FGSM-RS: 1.25 eps
    assert default_step_size(0.1, 20, "warm") == pytest.approx(0.025)  # ATTA: 0.25 eps per step
    fgsm = robrep.create_learner("se-fgsm")
    assert fgsm.config.selection_start == "random"
    assert fgsm.step_size() == pytest.approx(default_step_size(c.selection_eps, 1))
    with pytest.raises(ValueError, match="selection_start must be one of"):
        robrep.create_learner("se-adversarial", selection_start="cold")
    with pytest.raises(ValueError, match="selection_step_size must be > 0"):
        robrep.create_learner("se-adversarial", selection_step_size=-0.1)


def test_fgsm_selection_is_one_step_of_1_25_eps_from_a_random_start(trained):
    learner, x = trained
    se = robrep.create_learner("se-fgsm")
    se.load_state_dict(learner.state_dict())  # the same encoder as the trained VAE
    assert se.config.selection_steps == 1 and se.step_size() == pytest.approx(1.25 * se.config.selection_eps)
    torch.manual_seed(0)
    x_b = se.select(x)
    assert (x_b - x).abs().max() <= se.config.selection_eps + 1e-6 and x_b.min() >= 0 and x_b.max() <= 1
    # a step of 1.25 eps from inside the ball ends on the ball's faces (or the box's) almost everywhere
    on_face = ((x_b - x).abs() >= se.config.selection_eps - 1e-6) | (x_b == 0) | (x_b == 1)
    assert on_face.float().mean() > 0.9
    d = se.distance()
    with torch.no_grad():
        fgsm = d(*se.encode(x), *se.encode(x_b))
        rnd = d(*se.encode(x), *se.encode(random_selection(x, se.config.selection_eps, se.bounds)))
    assert (fgsm - rnd).mean() > 0


def test_warm_selection_continues_from_each_examples_last_point(mnist5k):
    se = robrep.create_learner("se-warm")
    assert se.config.selection_steps == 1 and se.step_size() == pytest.approx(0.25 * se.config.selection_eps)
    se.train()
    x = mnist5k.train.batch(slice(0, 16))
    index = torch.arange(100, 116)
    se.loss(x, index=index)
    visited, offsets = se.kept(torch.arange(200))
    assert visited[100:116].all() and not visited[:100].any() and not visited[116:].any()
    eps = se.config.selection_eps
    first = x + offsets[100:116]
    assert (first - x).abs().max() <= eps + 1e-6 and (first != x).any()
    # the next visit starts where the last ended: one step of 0.25 eps moves it at most that far
    torch.manual_seed(1)
    with se.visiting(index):
        second = se.select(x)
    assert (second - first).abs().max() <= 0.25 * eps + eps / 127 + 1e-5
    assert (second - x).abs().max() <= eps + 1e-6
    # a random start moves much further on average
    fresh = robrep.create_learner("se-warm")
    fresh.load_state_dict(se.state_dict())
    fresh.train()
    with fresh.visiting(index):
        other = fresh.select(x)
    assert (other - first).abs().mean() > 2 * (second - first).abs().mean()
    # nothing of it is in the checkpoint: the state dict is an ordinary SE's
    assert set(se.state_dict()) == set(robrep.create_learner("se-adversarial").state_dict())


@pytest.mark.parametrize("name", ["se-warm", "se-adversarial"])
def test_training_passes_indices_to_the_warm_learner(mnist5k, name):
    se = robrep.train(name, mnist5k, out=False, max_steps=3, seed=0, batch_size=64)
    assert int(se.kept(torch.arange(len(mnist5k.train)))[0].sum()) == 3 * 64  # three minibatches of distinct examples


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_the_default_se_adversarial_trains_as_se_warm_and_the_papers_selection_starts_at_random(mnist5k, arch):
    from robrep.checkpoint import state_bytes

    def weights(name, **cfg):
        return state_bytes(robrep.train(name, mnist5k, out=False, max_steps=4, seed=0, batch_size=32, arch=arch, **cfg))

    assert weights("se-adversarial", gamma=50.0) == weights("se-warm")
    assert weights("se-adversarial", gamma=50.0, selection_steps=2) == weights("se-warm", selection_steps=2)
    paper = robrep.create_learner("se-adversarial", selection_steps=3, selection_start="random")
    assert paper.wants_index and paper.config.selection_start == "random"
    paper.train()
    with paper.visiting(torch.arange(8)):
        paper.select(mnist5k.train.batch(slice(0, 8)))
    assert paper.kept(torch.arange(8))[1] is None  # a random start keeps no per-example points


def test_selection_with_the_callers_encoding_of_x_picks_the_same_points(trained):
    learner, x = trained
    calls = []

    def encode(v):
        calls.append(len(v))
        return learner.encode(v)

    torch.manual_seed(3)
    own = adversarial_selection(encode, x, EPS, steps=2, bounds=(0.0, 1.0))
    n_own = len(calls)
    with torch.no_grad():
        target = learner.encode(x)
    torch.manual_seed(3)
    given = adversarial_selection(encode, x, EPS, steps=2, target=target, bounds=(0.0, 1.0))
    assert torch.equal(own, given) and len(calls) - n_own == n_own - 1  # one encoding of x saved
