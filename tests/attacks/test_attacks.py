"""Every registered attack, the native PGD, and the checks every attack result goes through."""
import pytest
import torch

import robrep
from robrep.attacks import ATTACKS, PGD, Attack
from robrep.attacks.base import radius_seed
from robrep.attacks.geometry import ball_box, perturbation_norm, project
from robrep.checks import check_result
from robrep.probes import train_probe

RADII = [0.0, 0.05, 0.1, 0.2]


# every registered attack; the suites' attacks (``suite/name``) in both threat models
CASES = [(name, norm) for name in ATTACKS.list()
         for norm in (getattr(ATTACKS.get(name), "norms", ("linf", "l2")) if "/" in name else (None,))]


@pytest.mark.parametrize("name,norm", [pytest.param(n, m, id=f"{n}-{m}" if m else n,
                                                   marks=[pytest.mark.slow] if m == "l2" else [])
                                      for n, m in CASES])  # L2: the full suite in CI, the fast lane L-inf
def test_every_registered_attack_lowers_accuracy_and_never_raises_it(name, norm, undefended):
    """Driven by the registry: every attack registered (robrep's PGDs, each suite's as ``suite/name`` in L-inf
    and in L2, plugins') lowers accuracy below clean at a large radius, never above it at any, and passes the
    guards."""
    model, x, y = undefended
    x, y = x[:100], y[:100]
    attack = ATTACKS.create(name, 10, steps=10, restarts=1, **({"norm": norm} if norm else {}))
    assert norm is None or attack.norm == norm
    radii = [0.0, 0.05, 0.1, 0.3] if attack.norm == "linf" else [0.0, 0.5, 1.0, 6.0]  # 50 Square queries need 6
    res = attack.run(model, x, y, radii, seed=0)
    clean = (model.predict(x) == y).float().mean().item()
    accs = [res.accuracy(r) for r in radii]
    assert clean > 0.5 and accs[0] == clean
    assert accs[-1] < clean - 0.2, (name, accs)
    assert accs == sorted(accs, reverse=True) and max(accs) <= clean
    checks = check_result(model, x, y, res, attack.norm, seed=0)
    assert all(checks[r]["check_guards"] is not False and checks[r]["check_consistent"] is not False for r in radii)


@pytest.mark.parametrize("name", ["pgd-linf", "pgd-l2"])
def test_every_native_attack_lowers_accuracy_and_passes_the_checks(name, undefended):
    model, x, y = undefended
    radii = RADII if name.endswith("linf") else [0.0, 0.5, 1.0, 2.0]
    attack = ATTACKS.create(name, steps=20, restarts=2)
    res = attack.run(model, x, y, radii, seed=0)
    clean = (model.predict(x) == y).float().mean().item()
    assert clean > 0.5
    assert res.accuracy(0.0) == clean
    assert res.accuracy(radii[2]) < clean - 0.2
    accs = [res.accuracy(r) for r in radii]
    assert accs == sorted(accs, reverse=True)
    checks = check_result(model, x, y, res, attack.norm, seed=0)
    for r in radii:
        # small budgets: convergence is tests/attacks/test_checks.py's business
        assert all(v is not False for k, v in checks[r].items() if k.startswith("check_") and k != "check_converged"), \
            (r, checks[r])


def test_points_broken_at_a_smaller_radius_are_not_attacked_again(undefended):
    model, x, y = undefended
    res = PGD(steps=10, restarts=2).run(model, x, y, RADII, seed=0)
    for smaller, larger in zip(RADII, RADII[1:]):
        assert res.attacked[larger] == int(res.robust[smaller].sum())
        assert not (res.robust[larger] & ~res.robust[smaller]).any()


def test_more_restarts_and_steps_never_help_the_model(undefended):
    model, x, y = undefended
    weak = PGD(steps=5, restarts=1).run(model, x, y, [0.05], seed=0).accuracy(0.05)
    strong = PGD(steps=40, restarts=4).run(model, x, y, [0.05], seed=0).accuracy(0.05)
    assert strong <= weak


def test_same_seed_same_numbers(undefended):
    model, x, y = undefended
    a = PGD(steps=10, restarts=2).run(model, x, y, RADII, seed=3)
    b = PGD(steps=10, restarts=2).run(model, x, y, RADII, seed=3)
    assert all(torch.equal(a.robust[r], b.robust[r]) for r in RADII)


class _OutsideTheBall(Attack):
    """A broken attack: returns perturbations twice as large as allowed."""

    def perturb(self, model, x, y, eps, generator, progress=None):
        return torch.ones(len(x), dtype=torch.bool), (x + 2 * eps).clamp(0, 1)


class _ClaimsWithoutFlipping(Attack):
    """A broken attack: reports every point as broken without changing it."""

    def perturb(self, model, x, y, eps, generator, progress=None):
        return torch.ones(len(x), dtype=torch.bool), x.clone()


def test_inputs_that_fail_the_guards_never_count_and_are_flagged(undefended):
    model, x, y = undefended
    clean = (model.predict(x) == y).float().mean().item()
    for broken_attack in (_OutsideTheBall(), _ClaimsWithoutFlipping()):
        res = broken_attack.run(model, x, y, [0.0, 0.1], seed=0)
        assert res.accuracy(0.1) == clean  # nothing it returned was accepted
        assert res.rejected[0.1] == res.attacked[0.1] > 0
        checks = check_result(model, x, y, res, "linf", seed=0)
        assert checks[0.0]["check_guards"] and not checks[0.1]["check_guards"]
        assert checks[0.1]["n_rejected"] == res.rejected[0.1]
        assert checks[0.1]["check_consistent"]


def test_the_checks_catch_a_result_that_was_tampered_with(undefended):
    model, x, y = undefended
    res = PGD(steps=10, restarts=1).run(model, x, y, [0.0, 0.1], seed=0)
    res.robust[0.1] = ~res.robust[0.1]  # the decisions no longer match
    checks = check_result(model, x, y, res, "linf", seed=0)
    assert not checks[0.1]["check_consistent"]


def test_l2_projection_rounding_at_large_radii_is_not_rejected():
    # float32 rounding of a correct L2 projection on 3 x 64 x 64 inputs exceeds an absolute 1e-6 at radius 3
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5000, 3, 64, 64, generator=gen) * 0.5 + 0.25
    pgd = PGD(norm="l2")
    delta = torch.randn(x.shape, generator=gen)
    unit = (0.0, 1.0)
    x_adv = project(x + delta * 10, ball_box(x, 3.0, "l2", unit), 3.0, "l2", unit)
    assert (perturbation_norm(x_adv - x, "l2") > 3.0 + 1e-6).sum() > 0  # the old absolute slack rejects some
    assert pgd.admissible(x, x_adv, 3.0, unit).all()
    past = project(x + delta * 10, ball_box(x, 3.01, "l2", unit), 3.01, "l2", unit)
    assert not pgd.admissible(x, past, 3.0, unit).any()  # 0.3 % past: rejected


def test_attacks_keep_inputs_inside_the_bounds_the_model_carries(undefended):
    """The bounds live on the attacked model: an attack moves inside them and never writes [0, 1] itself."""
    from robrep.attacks.geometry import bounds_of

    model, x, y = undefended
    x, y = x[:60], y[:60]

    class Narrow(torch.nn.Module):  # the same classifier, told its inputs lie in [0.2, 0.8]
        bounds = (0.2, 0.8)

        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, z):
            return self.inner(z)

    narrow = Narrow().eval()
    x = x.clamp(0.2, 0.8)
    for attack in (PGD(steps=10, restarts=1), PGD(steps=10, restarts=1, norm="l2")):
        eps = 0.3 if attack.norm == "linf" else 3.0
        _, x_adv, _ = attack.perturb(narrow, x, y, eps, torch.Generator().manual_seed(0))
        assert x_adv.min() >= 0.2 and x_adv.max() <= 0.8
        assert bounds_of(narrow) == (0.2, 0.8) and bounds_of(model) == (0.0, 1.0)
    with pytest.raises(TypeError, match="carries no input bounds"):
        bounds_of(torch.nn.Linear(2, 2))


class _RejectedFirst(Attack):
    """Returns an example outside the ball in its first restart, a valid one after: a point whose example was
    rejected must be attacked again by the later restarts."""

    def perturb(self, model, x, y, eps, generator, progress=None):
        calls = []

        def call(xs, ys, seed):
            calls.append(len(xs))
            if len(calls) == 1:
                return (xs + 3 * eps).clamp(0, 1)  # rejected: outside the ball
            return PGD(steps=20, restarts=1).perturb(model, xs, ys, eps, torch.Generator().manual_seed(seed))[1]

        out = self.restarted(model, x, y, eps, generator, progress, 2, call)
        self.calls = calls
        return out


def test_a_point_whose_example_was_rejected_is_attacked_again(undefended):
    model, x, y = undefended
    attack = _RejectedFirst()
    res = attack.run(model, x, y, [0.0, 0.1], seed=0)
    assert attack.calls[1] == attack.calls[0]  # the second restart attacked every point again
    assert res.accuracy(0.1) < res.accuracy(0.0) - 0.2


def test_pgd_keeps_attacking_a_point_whose_flipped_iterate_is_inadmissible(undefended, monkeypatch):
    model, x, y = undefended
    pgd = PGD(steps=20, restarts=2)
    first = pgd.run(model, x, y, [0.1], seed=0)
    seen = []
    real = PGD.admissible

    def refuse_first_restart(self, x0, xt, eps, bounds):  # every iterate of the first restart is "outside the ball"
        ok = real(self, x0, xt, eps, bounds)
        seen.append(len(x0))
        return ok & torch.tensor(len(seen) > 21)

    monkeypatch.setattr(PGD, "admissible", refuse_first_restart)
    second = pgd.run(model, x, y, [0.0, 0.1], seed=0)
    assert second.accuracy(0.1) < second.accuracy(0.0) - 0.2
    # the points the first restart flipped were attacked again, and the last restart broke them
    assert second.evidence[0.1].n_last_restart > 0.5 * (first.evidence[0.1].n_attacked - first.evidence[0.1].n_robust)


def test_each_radius_has_its_own_seed_so_adding_a_radius_leaves_the_others(undefended):
    model, x, y = undefended
    base = PGD(steps=10, restarts=2).run(model, x, y, [0.0, 0.05, 0.1], seed=0)
    more = PGD(steps=10, restarts=2).run(model, x, y, [0.0, 0.05, 0.1, 0.2], seed=0)
    for r in (0.0, 0.05, 0.1):
        assert torch.equal(base.robust[r], more.robust[r]) and torch.equal(base.x_adv[r], more.x_adv[r])
    inside = PGD(steps=10, restarts=2).run(model, x, y, [0.0, 0.05, 0.075, 0.1], seed=0)
    assert torch.equal(inside.robust[0.05], base.robust[0.05])
    assert inside.seeds[0.1] == base.seeds[0.1] == radius_seed(0, 0.1)


def test_pgd_rejects_bad_settings():
    with pytest.raises(ValueError, match="steps >= 1"):
        PGD(steps=0)
    with pytest.raises(ValueError, match="linf or l2"):
        PGD(norm="l1")
    assert "steps=100" in repr(PGD()) and "restarts=10" in repr(PGD())


def test_probe_learns_binary_and_multiclass_tasks():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(600, 5, generator=g)
    binary = (feats[:, 0] + 0.1 * feats[:, 1] > 0).long()
    probe = train_probe(feats, binary, 2)
    assert probe.weight.shape == (2, 5)
    assert (probe(feats).argmax(1) == binary).float().mean() > 0.97
    multi = feats[:, :3].argmax(1)
    assert (train_probe(feats, multi, 3)(feats).argmax(1) == multi).float().mean() > 0.95
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        train_probe(feats, multi, 2)


def test_without_reuse_every_point_is_attacked_and_the_answer_is_the_same_kind(undefended):
    model, x, y = undefended
    fast = PGD(steps=10, restarts=2).run(model, x, y, RADII, seed=0)
    naive = PGD(steps=10, restarts=2, reuse=False).run(model, x, y, RADII, seed=0)
    n_correct = int(fast.clean_correct.sum())
    assert all(naive.attacked[r] == n_correct for r in RADII[1:])
    assert sum(fast.attacked.values()) < sum(naive.attacked.values())
    checks = check_result(model, x, y, naive, "linf", seed=0)
    assert all(v is not False for r in RADII for k, v in checks[r].items()
               if k.startswith("check_") and k != "check_converged")
    for r in RADII:
        assert abs(fast.accuracy(r) - naive.accuracy(r)) < 0.05
