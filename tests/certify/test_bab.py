"""Branch and bound (``robrep.certify.bab``) against exact answers: on tiny networks, enumerated on a fine grid of
their two-dimensional inputs, it decides every point under L-inf (agreeing with the grid and the mixed-integer
program) and all but a few under L2, never against the grid; what it breaks comes with a counterexample the model misclassifies inside the ball; smooth
activations, which have nothing to split, are refused."""
import pytest
import torch
from torch import nn

from robrep.certify import NotCertifiable
from robrep.certify.bab import branch_and_bound
from robrep.certify.complete import BROKEN, CERTIFIED, UNKNOWN, decide
from test_bounds import _grid_minimum, _tiny
from test_complete import _tiny_with_boundaries


@pytest.mark.parametrize("activation", [nn.ReLU, lambda: nn.LeakyReLU(0.1)], ids=["relu", "leaky"])
@pytest.mark.parametrize("norm,radii", [("linf", (0.05, 0.15, 0.3)), ("l2", (0.07, 0.2, 0.4))])
def test_every_point_of_a_tiny_network_is_decided_as_the_exact_answer_says(activation, norm, radii):
    seen = {CERTIFIED: 0, BROKEN: 0, UNKNOWN: 0}
    for seed, (model, x) in enumerate(_tiny_with_boundaries(activation)):
        with torch.no_grad():
            y = model(x).argmax(1)
        y[0] = (y[0] + 1) % 3  # one point misclassified unperturbed: broken by its own clean input
        for eps in radii:
            d = branch_and_bound(model, x, y, eps, norm=norm, time_limit=20)
            seen[UNKNOWN] += int((d.status == UNKNOWN).sum())
            if norm == "linf":  # complete over a box; an L2 leaf (every unit split) is bounded, not solved
                assert (d.status != UNKNOWN).all()
            if norm == "linf":  # the mixed-integer program, exact over the box, gives the same answers
                assert torch.equal(decide(model, x, y, eps, time_limit=20).status, d.status)
            for i in range(len(x)):
                exact = float(_grid_minimum(model, x[i:i + 1], int(y[i]), eps, norm).min())
                seen[int(d.status[i])] += i > 0
                if d.status[i] == CERTIFIED:
                    assert exact > 0, (seed, eps, i, exact)
                elif d.status[i] == BROKEN:  # a real counterexample: in the ball and the bounds, and misclassified by the model
                    adv = d.counterexamples[i]
                    gap = (adv - x[i]).abs().max() if norm == "linf" else (adv - x[i]).norm()
                    assert gap <= eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
                    with torch.no_grad():
                        assert model(adv[None]).argmax(1).item() != y[i]
                    assert exact < 1e-3  # the grid, coarser than the bounds, comes close to the boundary
    assert seen[CERTIFIED] > 10 and seen[BROKEN] > 10  # both answers exercised (besides the misclassified points)
    assert seen[UNKNOWN] <= 0.05 * 16 * 4 * len(radii)


def test_a_time_limit_leaves_a_hard_point_unknown_not_decided():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 8))
    from robrep.encoders import Encoder
    from robrep.probes import ProbedEncoder

    model = ProbedEncoder(Encoder(net), nn.Linear(8, 4))
    x = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(1)
    d = branch_and_bound(model, x, y, 0.05, time_limit=0.01)
    assert (d.status == UNKNOWN).any() and all(s < 5 for s in d.seconds)


def test_smooth_activations_are_refused():
    model = _tiny(0, nn.Tanh)
    with pytest.raises(NotCertifiable, match="smooth activations"):
        branch_and_bound(model, torch.rand(2, 1, 1, 2), torch.zeros(2, dtype=torch.long), 0.1)


def test_starting_from_crown_bounds_decides_the_same_points():
    """The root's intermediate bounds (CROWN, cheaper on convolutions, or alpha-CROWN) change the work, not the
    answers: on tiny networks under L-inf both decide every point alike."""
    model, x = _tiny_with_boundaries(nn.ReLU, count=1)[0]
    with torch.no_grad():
        y = model(x).argmax(1)
    for eps in (0.05, 0.15):
        crown = branch_and_bound(model, x, y, eps, time_limit=20, method="crown")
        assert (crown.status != UNKNOWN).all()
        assert torch.equal(crown.status, branch_and_bound(model, x, y, eps, time_limit=20).status)
    with pytest.raises(ValueError, match="crown or alpha-crown"):
        branch_and_bound(model, x, y, 0.1, method="ibp")
