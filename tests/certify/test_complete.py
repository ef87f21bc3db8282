"""The complete method (a mixed-integer program per margin) against exact answers: on tiny networks, enumerated on
a fine grid of their two-dimensional inputs, it decides every point and agrees with the grid; what it certifies
is robust, what it breaks comes with a counterexample the model itself misclassifies inside the ball; on a VAE
trained on real digits it certifies at least what CROWN does and never a point an attack breaks."""
import pytest
import torch
from torch import nn

from robrep.certify import certified
from robrep.certify.complete import BROKEN, CERTIFIED, UNKNOWN, decide
from test_bounds import _grid_minimum, _tiny


def _tiny_with_boundaries(activation, count=4):
    """Tiny networks whose decision changes inside the unit square (a steeper first layer; networks that give one
    class almost everywhere skipped), with 16 points each: 8 near a decision boundary, 8 anywhere."""
    out, seed = [], 0
    while len(out) < count:
        model = _tiny(seed, activation)
        seed += 1
        with torch.no_grad():
            model.encoder.module[1].weight.mul_(8)
            g = torch.rand(2000, 1, 1, 2)
            logits = model(g)
        if torch.bincount(logits.argmax(1), minlength=3).sort().values[-2] < 200:
            continue
        top = logits.topk(2, dim=1).values
        near = (top[:, 0] - top[:, 1]).argsort()[::40][:8]  # spread along the boundary
        out.append((model, torch.cat([g[near], torch.rand(8, 1, 1, 2)])))
    return out


@pytest.mark.parametrize("activation", [nn.ReLU, lambda: nn.LeakyReLU(0.1)], ids=["relu", "leaky"])
@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_every_point_of_a_tiny_network_is_decided_as_the_exact_answer_says(activation, method):
    seen = {CERTIFIED: 0, BROKEN: 0}
    for seed, (model, x) in enumerate(_tiny_with_boundaries(activation)):
        with torch.no_grad():
            y = model(x).argmax(1)
        y[0] = (y[0] + 1) % 3  # one point misclassified unperturbed: broken by its own clean input
        for eps in (0.05, 0.15, 0.3):
            d = decide(model, x, y, eps, time_limit=10, method=method)
            assert (d.status != UNKNOWN).all()
            for i in range(len(x)):
                exact = float(_grid_minimum(model, x[i:i + 1], int(y[i]), eps, "linf").min())
                seen[int(d.status[i])] += i > 0
                if d.status[i] == CERTIFIED:
                    assert exact > 0, (seed, eps, i, exact)
                else:  # a real counterexample: in the ball and the bounds, and misclassified by the model
                    adv = d.counterexamples[i]
                    assert (adv - x[i]).abs().max() <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
                    with torch.no_grad():
                        assert model(adv[None]).argmax(1).item() != y[i]
                    assert exact < 1e-3  # the grid, coarser than the program, comes close to the boundary
    assert seen[CERTIFIED] > 10 and seen[BROKEN] > 10  # both answers exercised (besides the misclassified points)


def test_it_certifies_at_least_what_the_relaxation_does_and_never_what_an_attack_breaks(mnist5k):
    import robrep
    from robrep.attacks import PGD
    from robrep.probes import ProbedEncoder, features, train_probe

    torch.manual_seed(0)
    learner = robrep.train("vae", mnist5k, out=False, max_steps=300)
    probe = train_probe(features(learner, mnist5k.train.images), mnist5k.train.labels["digit"], 10)
    model = ProbedEncoder(learner, probe)
    x, y = mnist5k.test.batch(slice(0, 12)), mnist5k.test.labels["digit"][:12]
    eps = 0.02
    crown = certified(model, x, y, eps)
    d = decide(model, x, y, eps, time_limit=5)
    assert (d.status[crown] == CERTIFIED).all()
    broken, _, _ = PGD(steps=50, restarts=2, loss="ce+margin").perturb(model, x, y, eps,
                                                                      torch.Generator().manual_seed(0))
    assert not ((d.status == CERTIFIED) & broken).any()
    assert (d.status[broken] == BROKEN).float().mean() >= 0.5  # the program breaks them too (or times out)
    assert (d.status != UNKNOWN).float().mean() > 0.7  # a small radius: most of it decided
