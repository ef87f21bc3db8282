"""The reference families' own pieces, against exact answers: the beta-TCVAE decomposition, NT-Xent, the training
ascent, the supervised learners' labels, the adversarial probe and the probe mode in rows and rankings."""
import math

import pandas as pd
import pytest
import torch

import robrep
from robrep.ascent import ascent
from robrep.learners import card, create_learner
from robrep.learners.contrastive import augment, nt_xent
from robrep.learners.tcvae import log_normal, tc_decomposition
from robrep.harness.config import BenchConfig
from robrep.validate import ConfigError


def test_the_tc_decomposition_sums_to_the_sampled_kl():
    """mi + tc + dimension-wise KL = log q(z|x) - log p(z) at the sample, whatever the estimator of q(z)."""
    torch.manual_seed(0)
    mu, logvar = torch.randn(16, 5), torch.randn(16, 5) * 0.3
    z = mu + (0.5 * logvar).exp() * torch.randn(16, 5)
    parts = tc_decomposition(z, mu, logvar, dataset_size=1000)
    total = parts["mi"] + parts["tc"] + parts["dwkl"]
    exact = log_normal(z, mu, logvar).sum(1) - log_normal(z, torch.zeros(5), torch.zeros(5)).sum(1)
    assert torch.allclose(total, exact, atol=1e-5)


def test_the_tc_of_a_factorised_aggregate_is_small_and_of_a_correlated_one_large():
    torch.manual_seed(0)
    n, d = 512, 2
    independent = torch.randn(n, d)
    correlated = torch.randn(n, 1).repeat(1, d)  # both latents equal: all the correlation there is
    small = torch.full((n, d), math.log(0.01))
    tc_ind = tc_decomposition(independent, independent, small, n)["tc"].mean()
    tc_cor = tc_decomposition(correlated, correlated, small, n)["tc"].mean()
    assert tc_cor > tc_ind + 1.0


def test_nt_xent_matches_its_definition_and_prefers_aligned_views():
    torch.manual_seed(0)
    a, b = torch.randn(4, 3), torch.randn(4, 3)
    z = torch.nn.functional.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / 0.5
    expected = []
    for i in range(8):
        partner = (i + 4) % 8
        others = [j for j in range(8) if j != i]
        expected.append(-(sim[i, partner] - torch.logsumexp(sim[i, others], 0)))
    expected = torch.stack(expected)
    assert torch.allclose(nt_xent(a, b, 0.5), 0.5 * (expected[:4] + expected[4:]), atol=1e-5)
    assert nt_xent(a, a, 0.5).mean() < nt_xent(a, b, 0.5).mean()


def test_augmented_views_stay_images_and_differ():
    from robrep.learners.contrastive import SimCLRConfig

    x = torch.rand(6, 3, 28, 28)
    v1, v2 = augment(x, SimCLRConfig(shape=(3, 28, 28))), augment(x, SimCLRConfig(shape=(3, 28, 28)))
    assert v1.shape == x.shape and v1.min() >= 0 and v1.max() <= 1 and not torch.equal(v1, v2)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_ascent_finds_the_maximum_of_a_linear_objective_inside_the_ball_and_bounds(norm):
    torch.manual_seed(0)
    x = torch.rand(5, 1, 4, 4) * 0.6 + 0.2
    w = torch.randn(1, 1, 4, 4)
    eps = 0.1 if norm == "linf" else 0.5
    best = ascent(lambda v: (v * w).flatten(1).sum(1), x, eps, 20, (0.0, 1.0), norm=norm)
    if norm == "linf":
        exact = (x + eps * w.sign()).clamp(0, 1)
        assert torch.allclose(best, exact, atol=1e-6)
    else:
        assert ((best - x).flatten(1).norm(dim=1) <= eps + 1e-5).all() and best.min() >= 0 and best.max() <= 1
        gain = ((best - x) * w).flatten(1).sum(1)
        assert (gain >= 0.95 * eps * w.norm()).all()  # the optimum is eps * |w| (inside the bounds here)


def test_the_supervised_learners_train_on_their_tasks_labels_and_say_so(mnist5k):
    model = robrep.train("supervised", mnist5k, out=False, max_steps=30)
    assert model.labels is not None and card("supervised").uses_labels and card("supervised-at").uses_labels
    assert not card("simclr").uses_labels
    bare = create_learner("supervised")
    with pytest.raises(RuntimeError, match="trains on labels"):
        bare.loss(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="no task 'shape'"):
        robrep.train("supervised", mnist5k, out=False, max_steps=1, task="shape")
    with pytest.raises(ValueError, match="set n_classes"):
        robrep.train("supervised", mnist5k, out=False, max_steps=1, n_classes=5)


def test_adversarial_training_attacks_inside_its_ball():
    torch.manual_seed(0)
    model = create_learner("supervised-at", attack_steps=3)
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    x_adv = model.trained_on(x, y)
    assert (x_adv - x).abs().max() <= model.config.attack_eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)


def test_a_random_init_baseline_is_the_same_network_for_the_same_seed(mnist5k):
    a = robrep.train("random-init", mnist5k, out=False, seed=3)
    b = robrep.train("random-init", mnist5k, out=False, seed=3)
    x = mnist5k.test.batch(slice(0, 8))
    assert torch.equal(a.encode(x)[0], b.encode(x)[0])


def test_the_adversarial_probe_resists_its_attack_better_than_the_standard_probe(mnist5k):
    """On the training digits it was trained on, a probe trained on PGD inputs keeps more of them at its radius
    than the standard probe on the same frozen encoder (robrep's PGD, 20 x 2)."""
    from robrep.attacks import PGD
    from robrep.probes import ProbedEncoder, features, train_adversarial_probe, train_probe

    torch.manual_seed(0)
    encoder = robrep.train("vae", mnist5k, out=False, max_steps=600)
    images, labels = mnist5k.train.images[:512], mnist5k.train.labels["digit"][:512]
    standard = train_probe(features(encoder, images), labels, 10)
    robust = train_adversarial_probe(encoder, images, labels, standard, eps=0.2, norm="linf", seed=0)
    x = images.float() / 255

    def accuracy(probe):
        broken, _, _ = PGD(steps=20, restarts=2).perturb(ProbedEncoder(encoder, probe), x, labels, 0.2,
                                                         torch.Generator().manual_seed(1))
        return 1 - broken.float().mean().item()

    assert accuracy(robust) > accuracy(standard) + 0.3  # measured: 0.61 against 0.04


def test_a_run_records_its_probe_and_the_two_probe_modes_are_ranked_apart(tmp_path, monkeypatch):
    from robrep.board.headline import headline_table

    monkeypatch.setenv("ROBREP_CACHE", str(tmp_path / "cache"))  # its encoders are its own

    small = dict(learners=("vae",), epochs=1, n_examples=60, radii=(0.0, 0.1), steps=3, restarts=1,
                 out=str(tmp_path / "run"))
    standard = robrep.bench(**small)
    adversarial = robrep.bench(**small, probe="adversarial")
    assert set(standard["probe"]) == {"standard"} and set(adversarial["probe"]) == {"adversarial linf 0.1"}
    both = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(set(both["probe"])) == ["adversarial linf 0.1", "standard"] and len(both) == 4
    table = headline_table(both)
    assert sorted(table["rank"]) == [1, 1], "each probe mode is ranked on its own"
    assert len(list((tmp_path / "run" / "probes").rglob("*-adversarial-linf-0.1.safetensors"))) == 1
    with pytest.raises(ConfigError, match="headline radius 0.1"):
        BenchConfig(protocol="mnist5k-linf", probe="adversarial", probe_eps=0.2)
    assert BenchConfig(protocol="mnist5k-l2", probe="adversarial").probe_mode == "adversarial l2 1.5"
    with pytest.raises(ConfigError, match="probe_eps is the adversarial probe's radius"):
        robrep.bench(**small, probe_eps=0.2)
