"""The native PGD suite and the checks every attack result goes through."""
import pytest
import torch

import robrep
from robrep.attacks import ATTACKS, PGD, Attack
from robrep.checks import check_result
from robrep.probes import train_probe

RADII = [0.0, 0.05, 0.1, 0.2]


@pytest.mark.parametrize("name", ATTACKS.list())
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
    checks = check_result(model, x, y, res, attack.norm)
    for r in radii:
        assert all(v for k, v in checks[r].items() if k.startswith("check_")), (r, checks[r])


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


def test_inputs_that_fail_validation_never_count_and_are_flagged(undefended):
    model, x, y = undefended
    clean = (model.predict(x) == y).float().mean().item()
    for broken_attack in (_OutsideTheBall(), _ClaimsWithoutFlipping()):
        res = broken_attack.run(model, x, y, [0.0, 0.1], seed=0)
        assert res.accuracy(0.1) == clean  # nothing it returned was accepted
        assert res.rejected[0.1] == res.attacked[0.1] > 0
        checks = check_result(model, x, y, res, "linf")
        assert checks[0.0]["check_valid_outputs"] and not checks[0.1]["check_valid_outputs"]
        assert checks[0.1]["n_rejected"] == res.rejected[0.1]
        assert checks[0.1]["check_in_ball"] and checks[0.1]["check_recomputed"]


def test_the_checks_catch_a_result_that_was_tampered_with(undefended):
    model, x, y = undefended
    res = PGD(steps=10, restarts=1).run(model, x, y, [0.0, 0.1], seed=0)
    res.x_adv[0.1] = (res.x_adv[0.1] + 0.5).clamp(0, 1)  # outside the ball
    res.robust[0.1] = ~res.robust[0.1]  # and the decisions no longer match
    checks = check_result(model, x, y, res, "linf")
    assert not checks[0.1]["check_in_ball"] and not checks[0.1]["check_recomputed"]
    assert not checks[0.1]["check_monotone"]


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
    checks = check_result(model, x, y, naive, "linf")
    assert all(v for r in RADII for k, v in checks[r].items() if k.startswith("check_"))
    for r in RADII:
        assert abs(fast.accuracy(r) - naive.accuracy(r)) < 0.05
