"""Certified bounds against exact answers: never above the true minimum margin (tiny networks, enumerated on a
fine grid of their two-dimensional inputs), never certifying a point an attack breaks (a VAE on real digits),
refusing a layer they cannot bound, and leaving the model as it was."""
import pytest
import torch
from torch import nn

from robrep.attacks import PGD
from robrep.certify import NotCertifiable, certified, lower_margins
from robrep.encoders import Encoder
from robrep.probes import ProbedEncoder


def _tiny(seed: int, activation=nn.ReLU):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 8), activation(), nn.Linear(8, 6), activation(), nn.Linear(6, 3))
    return ProbedEncoder(Encoder(net), nn.Linear(3, 3))


def _grid_minimum(model, x, y, eps, norm, n=161):
    """The smallest margin per class over a fine grid of the ball (and the bounds), corners included."""
    g = torch.linspace(-eps, eps, n)
    d = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 1, 1, 2)
    if norm == "l2":
        d = d[d.flatten(1).norm(dim=1) <= eps]
    with torch.no_grad():
        logits = model((x + d).clamp(0, 1))
    worst = (logits[:, y][:, None] - logits).min(0).values
    worst[y] = float("inf")
    return worst


SMOOTH = [nn.Softplus, lambda: nn.Softplus(beta=3.0), nn.ELU, lambda: nn.ELU(alpha=0.5), nn.Sigmoid, nn.Tanh]
SMOOTH_IDS = ["softplus", "softplus-beta3", "elu", "elu-0.5", "sigmoid", "tanh"]


@pytest.mark.parametrize("activation", [nn.ReLU, lambda: nn.LeakyReLU(0.1)] + SMOOTH, ids=["relu", "leaky"] + SMOOTH_IDS)
@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 0.2)])
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_a_bound_never_exceeds_the_exact_minimum_margin(method, norm, eps, activation):
    for seed in range(6):
        model = _tiny(seed, activation)
        x = torch.rand(4, 1, 1, 2)
        with torch.no_grad():
            y = model(x).argmax(1)
        low = lower_margins(model, x, y, eps, norm, method)
        for i in range(len(x)):
            exact = _grid_minimum(model, x[i:i + 1], int(y[i]), eps, norm)
            assert (low[i] <= exact + 1e-6).all(), (seed, i, low[i], exact)


@pytest.mark.parametrize("activation", SMOOTH, ids=SMOOTH_IDS)
def test_each_relaxation_encloses_its_activation_on_random_intervals(activation):
    from robrep.certify.relax import activation_of, relax

    op = activation_of(activation())
    gen = torch.Generator().manual_seed(0)
    centre = torch.randn(2000, generator=gen, dtype=torch.float64) * 3
    width = torch.rand(2000, generator=gen, dtype=torch.float64) * torch.tensor([0.01, 1.0, 8.0]).repeat(667)[:2000]
    lo, hi = centre - width / 2, centre + width / 2
    up_slope, up_bias, low_slope, low_bias = relax(lo, hi, op)
    t = torch.linspace(0, 1, 401, dtype=torch.float64)[:, None]
    x = lo + t * (hi - lo)  # (401, 2000): every interval on a dense grid, ends included
    f = op(x)
    assert (f <= up_slope * x + up_bias).all() and (f >= low_slope * x + low_bias).all()
    gap = ((up_slope - low_slope) * x + up_bias - low_bias).max(0).values
    assert (gap[width < 0.02] < 0.01).all()  # tight where the interval is narrow


def test_crown_is_tighter_than_ibp_and_certifies_what_is_exactly_certifiable_at_a_small_radius():
    model = _tiny(0)
    x = torch.rand(16, 1, 1, 2)
    with torch.no_grad():
        y = model(x).argmax(1)
    ibp, crown = (lower_margins(model, x, y, 0.05, "linf", m) for m in ("ibp", "crown"))
    finite = torch.isfinite(ibp)
    assert (crown[finite] >= ibp[finite] - 1e-9).mean(dtype=torch.float64) > 0.9
    exact = torch.stack([_grid_minimum(model, x[i:i + 1], int(y[i]), 0.005, "linf") for i in range(16)])
    tight = lower_margins(model, x, y, 0.005, "linf", "crown")
    decided = (exact > 0.01).all(1)  # robust with room to spare: a tiny ball must be certified
    assert ((tight > 0).all(1) | ~decided).all()


@pytest.mark.parametrize("norm,eps", [("linf", 0.15), ("l2", 0.2)])
def test_alpha_crown_is_never_looser_than_crown_and_tighter_somewhere(norm, eps):
    gained = 0.0
    for seed in range(6):
        model = _tiny(seed, lambda: nn.LeakyReLU(0.1))
        x = torch.rand(8, 1, 1, 2)
        with torch.no_grad():
            y = model(x).argmax(1)
        crown, alpha = (lower_margins(model, x, y, eps, norm, m) for m in ("crown", "alpha-crown"))
        finite = torch.isfinite(crown)
        assert (alpha[finite] >= crown[finite] - 1e-12).all()
        gained += float((alpha[finite] - crown[finite]).sum())
    assert gained > 0.01


def test_alpha_crown_in_chunks_of_points_gives_what_one_pass_gives(monkeypatch):
    import robrep.certify.bounds as bounds

    model = _tiny(3)
    x = torch.rand(9, 1, 1, 2)
    with torch.no_grad():
        y = model(x).argmax(1)
    whole = lower_margins(model, x, y, 0.15, "linf", "alpha-crown")
    monkeypatch.setattr(bounds, "ALPHA_ELEMENTS", 30)  # a few points per chunk
    chunked = lower_margins(model, x, y, 0.15, "linf", "alpha-crown")
    assert torch.allclose(whole, chunked, atol=1e-9, rtol=0) or (whole == chunked).all()


def test_a_certified_point_is_never_broken_by_an_attack_and_the_share_falls_with_the_radius(mnist5k):
    import robrep
    from robrep.probes import features, train_probe

    torch.manual_seed(0)
    learner = robrep.train("vae", mnist5k, out=False, max_steps=300)
    probe = train_probe(features(learner, mnist5k.train.images), mnist5k.train.labels["digit"], 10)
    model = ProbedEncoder(learner, probe)
    x, y = mnist5k.test.batch(slice(0, 100)), mnist5k.test.labels["digit"][:100]
    shares = []
    for eps in (0.005, 0.02, 0.05):
        sure = certified(model, x, y, eps)
        broken, _, _ = PGD(steps=50, restarts=2, loss="ce+margin").perturb(model, x, y, eps,
                                                                          torch.Generator().manual_seed(0))
        assert not (sure & broken).any(), f"a certified point was broken at {eps}"
        shares.append(sure.float().mean().item())
    assert shares[0] > 0.5 and shares == sorted(shares, reverse=True), shares
    assert next(model.parameters()).dtype == torch.float32  # the certifier worked on a copy


def test_a_layer_without_a_sound_bound_is_refused_not_given_a_number():
    for layer, words in ((nn.GELU(), "no sound bound for layer GELU: the certifier knows"),  # not monotone
                         (nn.ELU(alpha=2.0), "no sound bound for layer ELU with these settings")):  # not convex
        net = nn.Sequential(nn.Flatten(), nn.Linear(2, 4), layer, nn.Linear(4, 3))
        model = ProbedEncoder(Encoder(net), nn.Linear(3, 3))
        with pytest.raises(NotCertifiable, match=words):
            certified(model, torch.rand(2, 1, 1, 2), torch.zeros(2, dtype=torch.long), 0.1)

    class Residual(nn.Module):
        def forward(self, x):
            return x + torch.relu(x)

    with pytest.raises(NotCertifiable, match="Residual"):
        certified(ProbedEncoder(Encoder(Residual()), nn.Linear(2, 2)), torch.rand(2, 1, 1, 2),
                  torch.zeros(2, dtype=torch.long), 0.1)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.15)])
def test_the_representation_shift_lies_between_its_attack_and_its_bound(norm, eps):
    from robrep.certify import shift_attacked, shift_upper_bound

    for seed in range(4):
        model = _tiny(seed)
        x = torch.rand(3, 1, 1, 2) * 0.6 + 0.2
        upper = shift_upper_bound(model, x, eps, norm)
        lower = shift_attacked(model, x, eps, norm, steps=30, restarts=3)
        g = torch.linspace(-eps, eps, 101)
        d = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 1, 1, 2)
        if norm == "l2":
            d = d[d.flatten(1).norm(dim=1) <= eps]
        for i in range(len(x)):
            with torch.no_grad():
                grid = (model.encoder((x[i] + d).clamp(0, 1)) - model.encoder(x[i:i + 1])).norm(dim=1).max()
            # the attack measures in float32, the bound in float64: equal up to float32 rounding where tight
            assert lower[i] <= upper[i] + 1e-6 and grid <= upper[i] + 1e-6, (seed, i, lower[i], grid, upper[i])
            assert lower[i] >= 0.9 * grid  # the attack finds (nearly) the grid's largest shift on a tiny network


def _tiny_conv(seed: int):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=0),
                        nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 5))
    return ProbedEncoder(Encoder(net), nn.Linear(5, 4))


@pytest.mark.parametrize("method", ["crown", "alpha-crown"])
def test_a_convolution_is_bounded_through_its_transpose_as_through_its_dense_matrix(method, monkeypatch):
    """A convolution's back-substitution runs as its transpose (not its dense matrix: memory and time of the
    convolution), and CROWN's intermediate bounds in chunks of points: the bounds are those of the dense chain in
    one pass, and never above the margins the model shows at the ball's corners."""
    import robrep.certify.bounds as bounds

    model = _tiny_conv(0)
    x = torch.rand(7, 1, 10, 10)  # an even size: the first transpose needs its output padding
    with torch.no_grad():
        y = model(x).argmax(1)
    structured = lower_margins(model, x, y, 0.05, "linf", method)
    assert any(op.conv is not None for op in bounds.chain(model, (1, 10, 10)) if isinstance(op, bounds.Affine))
    monkeypatch.setattr(bounds, "CROWN_ELEMENTS", 200)  # a point or two per chunk
    assert torch.allclose(lower_margins(model, x, y, 0.05, "linf", method), structured, atol=1e-9)
    dense = bounds.chain

    def without_convolutions(*args, **kwargs):
        ops = dense(*args, **kwargs)
        for op in ops:
            if isinstance(op, bounds.Affine):
                op.conv = None
        return ops

    monkeypatch.setattr(bounds, "chain", without_convolutions)
    assert torch.allclose(lower_margins(model, x, y, 0.05, "linf", method), structured, atol=1e-9)
    signs = torch.randint(0, 2, (64, 1, 1, 10, 10)) * 2 - 1  # corners of the ball
    with torch.no_grad():
        logits = model((x[None] + 0.05 * signs).clamp(0, 1).flatten(0, 1)).view(64, len(x), -1)
    margins = logits.gather(2, y[None, :, None].expand(64, -1, 1)) - logits
    finite = torch.isfinite(structured)
    assert (structured[finite] <= margins.amin(0)[finite] + 1e-9).all()
