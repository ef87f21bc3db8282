"""The toy discrete model (paper figures 2 and 3): VAE leaves off-data rows alone, SE smooths them."""
import math

import pytest
import torch

from robrep.toy import (
    ToyConfig,
    _neighbour_pairs,
    circular_cost,
    encoder_tv,
    plot_toy,
    run_toy,
    sinkhorn,
    train_toy,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def results():
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    return {kind: train_toy(kind, ToyConfig()) for kind in ("vae", "se")}


def test_vae_leaves_unobserved_rows_at_initialisation(results):
    r = results["vae"]
    unobserved, observed = r.s == 0, r.s > 0
    assert unobserved.sum() >= 10, "the default data set should leave many x unobserved"
    for name in ("mu", "log_sigma"):
        assert torch.equal(r.params[name][unobserved], r.params_init[name][unobserved])
        assert (r.params[name][observed] != r.params_init[name][observed]).all()
    assert torch.equal(r.Q[unobserved], r.Q_init[unobserved])
    assert ((r.Q[observed] - r.Q_init[observed]).abs().amax(dim=1) > 1e-3).all()


def test_se_is_smoother_than_vae_off_the_data(results):
    vae, se = results["vae"], results["se"]
    unobserved = vae.s == 0
    tv_vae, tv_se = encoder_tv(vae.Q, unobserved), encoder_tv(se.Q, unobserved)
    assert tv_se < 0.5 * tv_vae, (tv_se, tv_vae)
    assert encoder_tv(se.Q) < 0.5 * encoder_tv(vae.Q)
    # Smooth without collapsing: runs whose encoder collapsed to near-uniform rows scored -105 to -110
    # here (VAE -88); the SE stays within a few nats of the VAE.
    assert se.elbo > vae.elbo - 15


def _entropic_ot_2x2(a0: float, b0: float, gamma: float) -> float:
    """Brute force: a 2x2 coupling with marginals a, b has one free entry t = Q[0, 0]."""
    from scipy.optimize import minimize_scalar

    c = 0.25  # circular_cost(2) off the diagonal

    def objective(t):
        q = torch.tensor([t, a0 - t, b0 - t, 1 - a0 - b0 + t], dtype=torch.float64)
        return (gamma / 2 * c * (q[1] + q[2]) + (q * q.log()).sum()).item()

    lo, hi = max(0.0, a0 + b0 - 1), min(a0, b0)
    res = minimize_scalar(objective, bounds=(lo + 1e-15, hi - 1e-15), method="bounded",
                          options={"xatol": 1e-13})
    return res.fun


@pytest.mark.parametrize("gamma", [0.5, 8.0, 60.0])
def test_sinkhorn_matches_brute_force_2x2(gamma):
    pytest.importorskip("scipy")
    a0, b0 = 0.3, 0.65
    log_a = torch.tensor([[a0, 1 - a0]], dtype=torch.float64).log()
    log_b = torch.tensor([[b0, 1 - b0]], dtype=torch.float64).log()
    value, log_q = sinkhorn(log_a, log_b, circular_cost(2), gamma, iters=200)
    assert value.item() == pytest.approx(_entropic_ot_2x2(a0, b0, gamma), rel=1e-7, abs=1e-9)
    q = log_q.exp()[0]
    assert torch.allclose(q.sum(1), log_a.exp()[0], atol=1e-10)
    assert torch.allclose(q.sum(0), log_b.exp()[0], atol=1e-12)


def test_sinkhorn_limits_and_marginals():
    gen = torch.Generator().manual_seed(0)
    log_a = torch.log_softmax(2 * torch.randn(3, 40, generator=gen, dtype=torch.float64), dim=1)
    log_b = torch.log_softmax(2 * torch.randn(3, 40, generator=gen, dtype=torch.float64), dim=1)
    cost = circular_cost(40)
    entropy = lambda log_p: -(log_p.exp() * log_p).sum(dim=1)  # noqa: E731
    # gamma -> 0: the independent coupling, value -H[a] - H[b].
    value, _ = sinkhorn(log_a, log_b, cost, 1e-8, iters=5)
    assert torch.allclose(value, -entropy(log_a) - entropy(log_b), atol=1e-6)
    # Moderate gamma: both marginals hold.
    _, log_q = sinkhorn(log_a, log_b, cost, 100.0, iters=50)
    assert torch.allclose(log_q.exp().sum(2), log_a.exp(), atol=1e-9)
    assert torch.allclose(log_q.exp().sum(1), log_b.exp(), atol=1e-12)
    # Identical marginals and large gamma (the kernel underflows, so this takes the logsumexp branch):
    # the coupling is the diagonal and the value -H[a]. (With a != b such a gamma would need thousands
    # of iterations: Sinkhorn's iteration count grows with gamma * max C.)
    value, log_q = sinkhorn(log_a, log_a, cost, 1e5, iters=50)
    assert torch.diagonal(log_q.exp(), dim1=1, dim2=2).sum(1).min() > 1 - 1e-9
    assert torch.allclose(value, -entropy(log_a), atol=1e-8)


def test_sinkhorn_is_differentiable():
    gen = torch.Generator().manual_seed(1)
    logits_a = torch.randn(2, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    logits_b = torch.randn(2, 5, generator=gen, dtype=torch.float64, requires_grad=True)

    def value(la, lb):
        return sinkhorn(torch.log_softmax(la, 1), torch.log_softmax(lb, 1), circular_cost(5), 20.0, 30)[0]

    assert torch.autograd.gradcheck(value, (logits_a, logits_b))


@pytest.mark.parametrize("neighbours", ["both", "random"])
def test_neighbour_weights_sum_to_the_data_size(neighbours):
    config = ToyConfig(neighbours=neighbours, radius=3)
    s = torch.zeros(config.nx, dtype=torch.float64)
    s[[0, 7, 39]] = torch.tensor([2.0, 1.0, 4.0], dtype=torch.float64)
    i, j, w = _neighbour_pairs(s, config, torch.Generator().manual_seed(0))
    assert w.sum().item() == pytest.approx(7.0)
    dist = (i - j).abs()
    assert ((torch.minimum(dist, config.nx - dist) >= 1) & (torch.minimum(dist, config.nx - dist) <= 3)).all()


def test_plot_toy_writes_png(results, tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    path = plot_toy(results, tmp_path / "toy.png")
    assert path == tmp_path / "toy.png"
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 30_000
    assert [p.name for p in tmp_path.iterdir()] == ["toy.png"]  # no temp file left behind
    assert matplotlib.get_backend() == backend


def test_run_toy_writes_png_and_csv(tmp_path):
    png = run_toy(tmp_path, ToyConfig(steps=30))
    assert png == tmp_path / "toy.png" and png.read_bytes()[:8] == PNG_SIGNATURE
    lines = (tmp_path / "toy.csv").read_text().splitlines()
    assert lines[0] == "learner,elbo,tv_all,tv_unobserved,n_unobserved"
    assert [line.split(",")[0] for line in lines[1:]] == ["vae", "se"]
    assert all(math.isfinite(float(x)) for line in lines[1:] for x in line.split(",")[1:])
