"""The probe fit (robrep.probes): Newton's method reaches the minimum of the probe's objective, L-BFGS reaches the
same one less tightly, and both give the same rounded probe; degenerate features and bad input."""
import pytest
import torch
import torch.nn.functional as F

from robrep.checkpoint import state_bytes
from robrep.io import sha256_bytes
from robrep.probes import NEWTON_MAX, features, fit_probe, train_probe

WD = 1e-4


def _objective_and_gradient(feats, labels, weight, bias):
    """The raw objective (mean cross-entropy + 1/2 WD ||W, b||^2) and the largest entry of its gradient."""
    w = weight.double().clone().requires_grad_(True)
    b = bias.double().clone().requires_grad_(True)
    loss = F.cross_entropy(feats.double() @ w.T + b, labels) + 0.5 * WD * (w.pow(2).sum() + b.pow(2).sum())
    loss.backward()
    return loss.item(), max(w.grad.abs().max().item(), b.grad.abs().max().item())


@pytest.fixture(scope="module")
def representation(undefended, mnist5k):
    model, _, _ = undefended
    return features(model.encoder, mnist5k.train.images[:2000]), mnist5k.train.labels["digit"][:2000]


@pytest.mark.slow
def test_newton_reaches_the_minimum_and_lbfgs_the_same_probe(representation):
    feats, labels = representation
    w_n, b_n = fit_probe(feats, labels, 10, solver="newton")
    w_l, b_l = fit_probe(feats, labels, 10, solver="lbfgs")
    f_n, g_n = _objective_and_gradient(feats, labels, w_n, b_n)
    f_l, g_l = _objective_and_gradient(feats, labels, w_l, b_l)
    assert g_n < 1e-10  # the minimum of a strictly convex objective, to float64 resolution
    assert f_n <= f_l + 1e-12 and g_n <= g_l
    assert (w_n - w_l).abs().max() < 1e-4 * w_n.abs().max()  # the same minimum, L-BFGS's less tightly
    newton = train_probe(feats, labels, 10, solver="newton")
    assert sha256_bytes(state_bytes(newton)) == sha256_bytes(state_bytes(train_probe(feats, labels, 10, solver="lbfgs")))
    assert sha256_bytes(state_bytes(newton)) == sha256_bytes(state_bytes(train_probe(feats, labels, 10)))  # auto


def test_auto_takes_newton_up_to_its_size_and_newton_cg_above(representation, monkeypatch):
    from robrep import probes

    feats, labels = representation
    calls = []
    for name in ("_newton", "_newton_cg", "_lbfgs"):
        real = getattr(probes, name)
        monkeypatch.setattr(probes, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    fit_probe(feats, labels, 10)
    assert (feats.shape[1] + 1) * 10 <= NEWTON_MAX and calls == ["_newton"]
    gen = torch.Generator().manual_seed(0)  # (d + 1) x 2 classes > NEWTON_MAX: the features and noise
    wide = torch.cat([feats[:600], torch.randn(600, NEWTON_MAX // 2, generator=gen)], 1)
    w, b = fit_probe(wide, labels[:600] % 2, 2)
    assert calls == ["_newton", "_newton_cg"]
    assert _objective_and_gradient(wide, labels[:600] % 2, w, b)[1] < 1e-10  # the minimum, too


def test_newton_cg_reaches_the_same_minimum_as_newton(representation):
    feats, labels = representation
    w_n, b_n = fit_probe(feats, labels, 10, solver="newton")
    w_c, b_c = fit_probe(feats, labels, 10, solver="newton-cg")
    assert _objective_and_gradient(feats, labels, w_c, b_c)[1] < 1e-10
    assert (w_n - w_c).abs().max() < 1e-8 * w_n.abs().max()
    assert sha256_bytes(state_bytes(train_probe(feats, labels, 10, solver="newton-cg"))) == \
        sha256_bytes(state_bytes(train_probe(feats, labels, 10, solver="newton")))


def test_binary_and_few_labels(representation):
    feats, labels = representation
    for n, task in ((2000, labels % 2), (40, labels[:40])):  # a binary task; 40 labels of 10 classes (separable)
        w, b = fit_probe(feats[:n], task[:n], int(task.max()) + 1)
        assert _objective_and_gradient(feats[:n], task[:n], w, b)[1] < 1e-10


def test_constant_features_get_their_exact_share(representation):
    """A constant feature is not standardised (its std is 0): it acts as a second bias, and the penalty splits the
    bias between it and b; an all-zero feature gets weight 0."""
    feats, labels = representation
    n = len(feats)
    padded = torch.cat([feats, torch.full((n, 1), 3.0), torch.zeros(n, 1)], 1)
    w, b = fit_probe(padded, labels, 10)
    assert torch.isfinite(w).all() and torch.isfinite(b).all()
    assert _objective_and_gradient(padded, labels, w, b)[1] < 1e-10
    assert (w[:, -1] == 0).all()
    assert torch.allclose(w[:, -2], 3.0 * b, rtol=1e-6, atol=1e-9)  # min w^2 + b^2 with 3 w + b fixed: w = 3 b


def test_bad_input_is_refused_with_what_was_expected(representation):
    feats, labels = representation
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        train_probe(feats, labels, 2)
    with pytest.raises(ValueError, match="solver must be one of auto, newton, newton-cg, lbfgs"):
        train_probe(feats, labels, 10, solver="sgd")
    with pytest.raises(ValueError, match=r"features \(N, d\) and N labels"):
        train_probe(feats[:10], labels[:9], 10)
    with pytest.raises(ValueError, match=r"features \(N, d\) and N labels"):
        train_probe(feats[:0], labels[:0], 10)
