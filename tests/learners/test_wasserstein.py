"""The closed-form entropic Wasserstein term of method.md section 3."""
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

from robrep.learners.smooth import optimal_cross_covariance, wd_gamma


def direct_wd(mu_a, var_a, mu_b, var_b, gamma):
    """min over rho of gamma/2 E||z_a - z_b||^2 - H[Q], Q Gaussian with correlation rho, per dimension."""
    total, rhos = 0.0, []
    for ma, va, mb, vb in zip(mu_a, var_a, mu_b, var_b):
        sa, sb = math.sqrt(va), math.sqrt(vb)

        def objective(rho):
            transport = gamma / 2 * ((ma - mb) ** 2 + va + vb - 2 * rho * sa * sb)
            entropy = math.log(2 * math.pi * math.e) + 0.5 * math.log(va * vb * (1 - rho**2))
            return transport - entropy

        res = minimize_scalar(objective, bounds=(-1 + 1e-15, 1 - 1e-15), method="bounded",
                              options={"xatol": 1e-13, "maxiter": 2000})
        total += res.fun
        rhos.append(res.x)
    return total, np.array(rhos)


@pytest.mark.parametrize("gamma", [0.01, 0.5, 3.0, 40.0])
def test_closed_form_equals_direct_minimisation_over_the_coupling(gamma):
    g = torch.Generator().manual_seed(int(gamma * 100))
    d = 6
    mu_a, mu_b = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    lv_a, lv_b = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    closed = wd_gamma(mu_a[None], lv_a[None], mu_b[None], lv_b[None], gamma).item()
    direct, rho = direct_wd(mu_a.tolist(), lv_a.exp().tolist(), mu_b.tolist(), lv_b.exp().tolist(), gamma)
    assert closed == pytest.approx(direct, rel=1e-7, abs=1e-7)
    # the optimal cross-covariance c = rho s_a s_b matches the minimiser
    c = optimal_cross_covariance(lv_a, lv_b, gamma).numpy()
    np.testing.assert_allclose(c, rho * (0.5 * (lv_a + lv_b)).exp().numpy(), rtol=1e-4, atol=1e-8)


def test_small_gamma_gives_independent_marginals():
    mu_a, lv_a = torch.tensor([[0.3, -1.0]], dtype=torch.float64), torch.tensor([[0.2, -2.0]], dtype=torch.float64)
    mu_b, lv_b = torch.tensor([[1.0, 2.0]], dtype=torch.float64), torch.tensor([[-0.5, 1.0]], dtype=torch.float64)
    entropy = lambda lv: (0.5 * (math.log(2 * math.pi * math.e) + lv)).sum()  # noqa: E731
    expected = -(entropy(lv_a) + entropy(lv_b)).item()
    assert wd_gamma(mu_a, lv_a, mu_b, lv_b, 1e-9).item() == pytest.approx(expected, abs=1e-7)


def test_large_gamma_transport_term_approaches_w2():
    mu_a, lv_a = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64), torch.tensor([[0.2, -2.0, 0.0]], dtype=torch.float64)
    mu_b, lv_b = torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64), torch.tensor([[-0.5, 1.0, 0.1]], dtype=torch.float64)
    w2 = ((mu_a - mu_b).pow(2).sum() + ((0.5 * lv_a).exp() - (0.5 * lv_b).exp()).pow(2).sum()).item()
    for gamma in (1e4, 1e6):
        # transport part = WD + H[Q*]; H[Q*] grows like log(1/gamma), so divide by gamma/2
        c = optimal_cross_covariance(lv_a, lv_b, gamma)
        var_a, var_b = lv_a.exp(), lv_b.exp()
        transport = ((mu_a - mu_b).pow(2) + var_a + var_b - 2 * c).sum().item()
        assert transport == pytest.approx(w2, rel=10 / gamma**0.5)
    # and WD itself, divided by gamma/2, tends to W2^2
    assert (2 / 1e8) * wd_gamma(mu_a, lv_a, mu_b, lv_b, 1e8).item() == pytest.approx(w2, rel=1e-4)


def test_identical_points_and_large_gamma_give_perfect_correlation():
    lv = torch.tensor([[0.1, -3.0, 2.0]], dtype=torch.float64)
    c = optimal_cross_covariance(lv, lv, 1e8)
    rho = c / lv.exp()
    assert torch.all(rho > 1 - 1e-5)
    # rho grows with gamma towards 1
    rhos = [(optimal_cross_covariance(lv, lv, g) / lv.exp()).min().item() for g in (0.1, 1, 10, 100)]
    assert rhos == sorted(rhos)


def test_finite_for_extreme_log_variances():
    lv = torch.tensor([[-40.0, 0.0, 30.0]])
    mu = torch.zeros(1, 3)
    out = wd_gamma(mu, lv, mu + 1, lv.flip(1), 10.0)
    assert torch.isfinite(out).all()
    lv.requires_grad_(True)
    wd_gamma(mu, lv, mu, lv.detach() * 0.5, 10.0).sum().backward()
    assert torch.isfinite(lv.grad).all()
