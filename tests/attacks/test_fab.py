"""robrep's targeted FAB: its projections bit for bit against the reference's (torchattacks' copies of
fra31/auto-attack's), and the whole attack against torchattacks' FAB-T on a trained encoder."""
import pytest
import torch
from torchattacks.attacks.fab import projection_l2, projection_linf

from robrep.attacks.external import TorchattacksAttack
from robrep.attacks.fab import FAB, project_l2, project_linf
from robrep.attacks.geometry import admissible


def hyperplanes(n: int, d: int, seed: int):
    """Rows as FAB projects them: digit-like points (mostly exact zeros and ones, so the sort meets many ties),
    gradients with exact zeros, offsets from far on either side to the points' own side, so that every case of
    the projections (target beyond the box, inside it, on the other side) occurs."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, d, generator=g)
    t = torch.where(t < 0.6, torch.zeros_like(t), torch.where(t > 0.9, torch.ones_like(t), t))
    w = torch.randn(n, d, generator=g) * (torch.rand(n, d, generator=g) > 0.2)
    scale = torch.logspace(-3, 2, n) * torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)
    b = (w * t).sum(1) + scale * w.abs().sum(1) * torch.rand(n, generator=g)
    return t, w, b


@pytest.mark.parametrize("ours, theirs", [(project_linf, projection_linf), (project_l2, projection_l2)])
@pytest.mark.parametrize("d", [784, 2352, 7])
def test_the_projections_are_the_reference_bit_for_bit(ours, theirs, d):
    for seed in range(3):
        t, w, b = hyperplanes(400, d, seed)
        expected = theirs(t.clone(), w.clone(), b.clone())
        got = ours(t, w, b)
        assert torch.equal(got, expected)
        assert got.abs().sum() > 0
    # every row selecting the same case (the usual one: no copies) and a mixture give the same as the reference
    t, w, b = hyperplanes(50, 784, 7)
    assert torch.equal(ours(t[:1].expand(50, -1).contiguous(), w, b), theirs(t[:1].expand(50, -1).clone(), w, b))


@pytest.mark.parametrize("norm, eps", [("linf", 0.04), ("linf", 0.08), ("l2", 1.0)])
def test_fab_t_breaks_exactly_the_points_torchattacks_fab_t_breaks(norm, eps, undefended):
    """Both run the published FAB-T without a random start, so they agree point for point: robrep's only
    schedules the work differently (every target in one batch, a broken point leaving at once)."""
    model, x, y = undefended
    keep = model.predict(x) == y
    x, y = x[keep][:120], y[keep][:120]
    ours = FAB(steps=30, norm=norm).run(model, x, y, [0.0, eps], seed=0)
    theirs = TorchattacksAttack("FAB", {"multi_targeted": True, "n_classes": 10, "steps": 30, "n_restarts": 1},
                                norm=norm).run(model, x, y, [0.0, eps], seed=0)
    assert 0 < int((~theirs.robust[eps]).sum()) < len(x)  # a radius where the answer is not trivial
    assert torch.equal(ours.robust[eps], theirs.robust[eps])
    broken = ~ours.robust[eps]
    assert admissible(x[broken], ours.x_adv[eps][broken], eps, norm, (0.0, 1.0)).all()
    assert (model.predict(ours.x_adv[eps][broken]) != y[broken]).all()


def test_fab_t_settings_and_registration():
    from robrep.attacks import ATTACKS

    with pytest.raises(ValueError):
        FAB(steps=0)
    with pytest.raises(ValueError):
        FAB(norm="l1")
    fab = ATTACKS.create("native/FAB-T", 10, steps=100, norm="l2")
    assert (fab.n_targets, fab.norm, fab.steps, fab.qualname) == (9, "l2", 100, "native/FAB-T")
    assert ATTACKS.create("native/FAB-T", 2).n_targets == 1
