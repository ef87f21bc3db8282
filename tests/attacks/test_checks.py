"""Each recorded check fails on an attack or a model broken on purpose, and holds on a sound one."""
import pytest
import torch
from torch import nn

from robrep.attacks import PGD, Attack
from robrep.checks import LATE_MAX, check_result

BIG = 0.3  # random noise in an L-inf ball this large misclassifies some digits of the undefended model


class _Identity(Attack):
    """Returns its inputs unchanged and claims nothing: an attack that silently does nothing."""

    def perturb(self, model, x, y, eps, generator, progress=None):
        return torch.zeros(len(x), dtype=torch.bool), x.clone()


class _Helper(PGD):
    """Walks the whole radius, but towards the true class (descends the loss, no random start)."""

    def objective(self, logits, y, loss=None):
        return -super().objective(logits, y, loss)

    def random_start(self, x, eps, gen, bounds):
        return x.clone()


class _LateRestarts(PGD):
    """Its restarts before the last take no step from x: the points only fall in the last restart."""

    def random_start(self, x, eps, gen, bounds):
        self._restart = getattr(self, "_restart", 0) + 1
        return x.clone()

    def ascent_step(self, xt, grad, alpha):
        return super().ascent_step(xt, grad, alpha if self._restart % self.restarts == 0 else 0.0)


def _checks(attack, model, x, y, radii):
    res = attack.run(model, x, y, radii, seed=0)
    return res, check_result(model, x, y, res, attack.norm, seed=0)


def test_an_attack_that_does_nothing_fails_explored_and_the_noise_floor(undefended):
    model, x, y = undefended
    res, checks = _checks(_Identity(), model, x, y, [0.0, 0.1, BIG])
    for r in (0.1, BIG):
        assert checks[r]["explored_share"] == 0.0 and checks[r]["check_explored"] is False
        assert checks[r]["check_guards"] and checks[r]["check_consistent"]  # the old checks all held
    assert checks[BIG]["noise_accuracy"] < res.accuracy(BIG) and checks[BIG]["check_noise_floor"] is False
    assert checks[0.0]["check_explored"] is None and checks[0.0]["check_noise_floor"]


def test_an_attack_weaker_than_noise_fails_the_noise_floor_though_it_explores(undefended):
    model, x, y = undefended
    res, checks = _checks(_Helper(steps=10, restarts=1), model, x, y, [0.0, BIG])
    assert checks[BIG]["check_explored"] is True  # it did walk the radius
    assert res.accuracy(BIG) > checks[BIG]["noise_accuracy"] and checks[BIG]["check_noise_floor"] is False
    _, sound = _checks(PGD(steps=20, restarts=2), model, x, y, [0.0, BIG])
    assert sound[BIG]["check_noise_floor"] and sound[BIG]["check_explored"] is not False


def test_an_attack_stopped_too_early_fails_convergence(undefended):
    model, x, y = undefended
    # a few small steps from no random start: points keep falling until the very last step
    slow = PGD(steps=5, restarts=1, rel_stepsize=1.0)
    slow.random_start = lambda x0, eps, gen, bounds: x0.clone()
    _, checks = _checks(slow, model, x, y, [0.0, 0.1])
    assert checks[0.1]["late_share"] > LATE_MAX and checks[0.1]["check_converged"] is False
    # an attack that only starts working in its last restart: more restarts would change the answer
    _, few = _checks(_LateRestarts(steps=10, restarts=3), model, x, y, [0.0, 0.1])
    assert few[0.1]["last_restart_share"] > LATE_MAX and few[0.1]["check_converged"] is False
    _, enough = _checks(PGD(steps=50, restarts=3), model, x, y, [0.0, 0.1])
    assert enough[0.1]["check_converged"], enough[0.1]


def _worst(model, x, y, attacks, radii):
    """The worst-case rows over ``attacks`` as the bench makes them (rows and per-point masks of each cell)."""
    import pandas as pd

    from robrep.harness import run_cell, worst_case_rows

    cells = []
    for attack in attacks:
        rows, masks = run_cell(model, x, y, attack, radii, seed=0)
        cells.append((attack, pd.DataFrame(rows).assign(norm="linf"), masks))
    return {w["radius"]: w for w in worst_case_rows({}, cells, radii)}


def test_the_worst_case_is_judged_converged_per_point(undefended):
    model, x, y = undefended
    slow = PGD(steps=5, restarts=1, rel_stepsize=1.0)
    slow.random_start = lambda x0, eps, gen, bounds: x0.clone()
    # a slow attack's late points that a strong attack broke early do not move the worst case
    both = _worst(model, x, y, [slow, PGD(steps=50, restarts=3)], [0.0, 0.1])[0.1]
    assert both["check_converged"] and both["late_share"] <= LATE_MAX and both["checks_passed"], both
    assert "pgd: not converged" in both["warnings"]  # the slow attack's own warning is kept
    # broken late by every attack that broke them: more budget would change the worst case
    alone = _worst(model, x, y, [slow, slow], [0.0, 0.1])[0.1]
    assert alone["check_converged"] is False and alone["late_share"] > LATE_MAX and not alone["checks_passed"]
    assert alone["warnings"].startswith("not converged") and "by every attack that broke them" in alone["warnings"]


class _Noisy(nn.Module):
    """A model whose decisions change from call to call (dropout left on)."""

    bounds = (0.0, 1.0)

    def __init__(self, model):
        super().__init__()
        self.model, self.drop = model, nn.Dropout(0.5)

    def forward(self, x):
        return self.model(self.drop.train()(x))


def test_a_nondeterministic_model_fails_consistency(undefended):
    model, x, y = undefended
    noisy = _Noisy(model)
    res = PGD(steps=5, restarts=1).run(noisy, x, y, [0.0, 0.05], seed=0)
    checks = check_result(noisy, x, y, res, "linf", seed=0)
    assert checks[0.05]["check_consistent"] is False or checks[0.0]["check_consistent"] is False


def test_the_observer_matches_each_query_to_the_point_it_perturbs():
    from robrep.attacks.geometry import perturbation_norm
    from robrep.attacks.observer import Observer

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(300, 3, 28, 28, generator=gen)
    y = torch.zeros(300, dtype=torch.long)
    for norm, eps in (("linf", 0.1), ("l2", 3.0)):
        obs = Observer(nn.Flatten(), x, y, eps, norm)
        pick = torch.randperm(300, generator=gen)[:120]  # a shuffled subset, as attacks query the points left
        delta = torch.rand(120, 3, 28, 28, generator=gen) * 2 - 1
        delta = delta * (eps / perturbation_norm(delta, norm)).view(-1, 1, 1, 1)
        for scale in (0.5, 1.0, 1.5):  # inside, on, and past the ball (FAB, DeepFool overshoot)
            j, dist = obs.match(x[pick] + scale * delta)
            assert torch.equal(j, pick), (norm, scale)
            assert torch.allclose(dist, torch.full_like(dist, scale * eps), rtol=1e-4)


class _BatchSensitive(nn.Module):
    """Two logits that differ by x's first pixel minus 0.5, plus a last-bits term that depends on the batch
    size, as matrix kernels that block by batch size do: an input on the boundary flips with its batch."""

    bounds = (0.0, 1.0)

    def forward(self, x):
        m = x.flatten(1)[:, 0] - 0.5 + (1e-6 if len(x) % 2 else -1e-6)
        return torch.stack([m, torch.zeros_like(m)], 1)


def test_a_decision_on_the_boundary_does_not_depend_on_its_batch():
    from robrep.attacks.base import decide, predict

    model = _BatchSensitive()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x[:3, 0, 0, 0] = 0.5  # three inputs on the boundary, three off it
    assert not torch.equal(model(x[:1]).argmax(1), model(x[:2]).argmax(1)[:1])  # the bare argmax does flip
    alone = torch.cat([predict(model, x[i:i + 1]) for i in range(6)])
    for batch in (x, x[:5], x[:4]):
        assert torch.equal(predict(model, batch), alone[:len(batch)])
        assert torch.equal(predict(model, batch, batch_size=2), alone[:len(batch)])
    _, tie = decide(model, x)
    assert tie.tolist() == [True] * 3 + [False] * 3
    off = x[3:, 0, 0, 0] > 0.5
    assert torch.equal(alone[3:], (~off).long())  # off the boundary, the plain argmax


@pytest.mark.parametrize("direct", [0, 1 << 22], ids=["block-means", "every-distance"])
def test_the_observer_matches_a_dense_coherent_step_that_lands_near_other_points_block_means(direct, monkeypatch):
    """An FGSM-like step (+eps on every pixel) moves every block mean by eps; decoys that differ from the
    point by eps plus pixel noise have nearer block means than the point itself, but the step lies in the
    point's ball only, so it must be matched to the point, not to a decoy."""
    from robrep.attacks import observer as B
    from robrep.attacks.observer import CANDIDATES, Observer

    monkeypatch.setattr(B, "DIRECT", direct)  # both ways of matching: bounds and candidates, or every distance
    gen = torch.Generator().manual_seed(0)
    eps = 0.2
    base = torch.rand(4, 3, 28, 28, generator=gen) * 0.5 + 0.2
    signs = torch.randint(0, 2, (4, 2 * CANDIDATES, 3, 28, 28), generator=gen) * 2 - 1
    decoys = (base[:, None] + eps + 0.3 * signs).flatten(0, 1)  # 0.3 from the step in L-inf, block means ~eps
    x = torch.cat([base, decoys])
    y = torch.zeros(len(x), dtype=torch.long)
    for norm in ("linf", "l2"):
        r = eps if norm == "linf" else eps * (3 * 28 * 28) ** 0.5
        obs = Observer(nn.Flatten(), x, y, r, norm)
        q = base + eps
        j, dist = obs.match(q[[2, 0, 3]])  # a subset in another order: not matched by position
        assert j.tolist() == [2, 0, 3], norm
        assert torch.allclose(dist, torch.full_like(dist, r), rtol=1e-4), norm
        fp = obs.fingerprint(q)
        assert obs.distance_bound(fp)[0].argmin() != 0  # the block means alone would pick a decoy


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_observer_finds_the_ball_that_holds_a_query_wherever_points_lie(norm):
    """Queries in batch order (the Observer guesses by position), inside, on and past their points' balls, with
    points in tight clusters (balls overlap, the triangle shortcut cannot decide) and far apart (it decides
    every past-the-ball query), and queries inside a cluster mate's ball given at another point's position:
    a query some ball holds is matched to a point whose ball holds it, measured
    against every point; a query no ball holds is reported outside."""
    from robrep.attacks.geometry import ball_slack, perturbation_norm
    from robrep.attacks.observer import Observer

    gen = torch.Generator().manual_seed(1)
    eps = 0.1 if norm == "linf" else 1.0
    centres = torch.rand(6, 1, 12, 12, generator=gen)
    x = (centres.repeat_interleave(10, 0) + 0.6 * eps / (12 if norm == "l2" else 1)
         * (torch.rand(60, 1, 12, 12, generator=gen) * 2 - 1)).clamp(0, 1)  # six clusters of ten
    x = torch.cat([x, torch.rand(40, 1, 12, 12, generator=gen)])  # and forty points far apart
    y = torch.zeros(len(x), dtype=torch.long)
    obs = Observer(nn.Flatten(), x, y, eps, norm)
    slack = eps + ball_slack(eps)
    delta = torch.rand(x.shape, generator=gen) * 2 - 1
    delta = delta * (eps / perturbation_norm(delta, norm)).view(-1, 1, 1, 1)
    mate = torch.arange(len(x))
    mate[:60] = (mate[:60] // 10) * 10 + (mate[:60] + 1) % 10  # a query at position i inside a cluster mate's ball
    for scale in (0.5, 1.0, 1.3, 2.5, 6.0, "mate"):
        q = x + scale * delta if scale != "mate" else x[mate] + 0.5 * delta[mate]
        j, dist = obs.match(q)
        every = perturbation_norm((q[:, None] - x[None]).flatten(0, 1), norm).view(len(q), len(x))
        held = (every <= slack).any(1)
        assert torch.equal(dist <= slack, held), (norm, scale)
        assert torch.allclose(dist, every.gather(1, j[:, None]).squeeze(1)), (norm, scale)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_an_attacks_hint_of_each_rows_point_is_checked_like_any_guess(norm):
    """Several rows per point (targets, restarts), as a batched attack queries them: with the right hint every row
    goes to its point; with a wrong one (rows given to other points) each row inside a ball is still matched to a
    point whose ball holds it, measured against every point; a hint is used once."""
    from robrep.attacks.geometry import ball_slack, perturbation_norm
    from robrep.attacks.observer import Observer, expect

    gen = torch.Generator().manual_seed(2)
    eps = 0.1 if norm == "linf" else 1.0
    x = torch.rand(40, 1, 12, 12, generator=gen)
    obs = Observer(nn.Flatten(), x, torch.zeros(40, dtype=torch.long), eps, norm)
    point = torch.arange(40).repeat_interleave(3)
    delta = torch.rand(120, 1, 12, 12, generator=gen) * 2 - 1
    q = x[point] + 0.5 * delta * (eps / perturbation_norm(delta, norm)).view(-1, 1, 1, 1)
    every = perturbation_norm((q[:, None] - x[None]).flatten(0, 1), norm).view(len(q), len(x))
    for hint in (point, point.roll(7)):
        expect(obs, hint)
        j, dist = obs.match(q)
        assert (dist <= eps + ball_slack(eps)).all() and torch.allclose(dist, every.gather(1, j[:, None]).squeeze(1))
        assert torch.equal(j, point) or not torch.equal(hint, point)
        assert obs._expected is None
    expect(nn.Flatten(), point)  # a bare model (no Observer): nothing to tell


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_the_observers_distance_is_the_perturbations_norm_and_leaves_its_inputs(norm):
    from robrep.attacks.geometry import distance, perturbation_norm

    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(5, 1, 4, 4, generator=gen), torch.rand(3, 1, 4, 4, generator=gen)
    a0, b0 = a.clone(), b.clone()
    assert torch.equal(distance(a[:3], b, norm), perturbation_norm(a[:3] - b, norm))
    pairs = distance(a[:, None], b[None], norm, 2)  # every query against every point: (5, 3)
    assert pairs.shape == (5, 3)
    assert torch.equal(pairs, perturbation_norm((a[:, None] - b[None]).flatten(0, 1), norm).view(5, 3))
    assert torch.equal(a, a0) and torch.equal(b, b0)
