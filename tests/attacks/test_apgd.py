"""robrep's APGD: the published algorithm, checked against a line-by-line port of its reference implementation
and against torchattacks' APGD-T on a trained encoder."""
import pytest
import torch

from robrep.attacks.apgd import APGD, dlr_targeted
from robrep.attacks.external import TorchattacksAttack
from robrep.attacks.geometry import admissible


def reference_apgd_t(model, x, y, target, eps, steps, x_init, rho=0.75):
    """fra31/auto-attack's ``APGDAttack.attack_single_run`` (L-inf, targeted DLR), ported line by line: every row
    steps to the end. Returns whether each row's iterates were ever misclassified, and each row's best iterate."""
    def loss_of(logits):
        return dlr_targeted(logits, y, target)

    x_adv = x_init.clone().clamp(0.0, 1.0)
    x_best = x_adv.clone()
    loss_steps = torch.zeros([steps, x.shape[0]])
    x_adv.requires_grad_()
    with torch.enable_grad():
        logits = model(x_adv)
        loss_indiv = loss_of(logits)
    grad = torch.autograd.grad(loss_indiv.sum(), [x_adv])[0].detach()
    grad_best = grad.clone()
    acc = logits.detach().max(1)[1] == y
    loss_best = loss_indiv.detach().clone()
    step_size = 2.0 * eps * torch.ones([x.shape[0], 1, 1, 1])
    x_adv_old = x_adv.clone()
    counter3, k = 0, max(int(0.22 * steps), 1)
    size_decr, n_iter_min = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    loss_best_last_check = loss_best.clone()
    reduced_last_check = torch.ones_like(loss_best)
    for i in range(steps):
        with torch.no_grad():
            x_adv = x_adv.detach()
            grad2 = x_adv - x_adv_old
            x_adv_old = x_adv.clone()
            a = 0.75 if i > 0 else 1.0
            x_adv_1 = x_adv + step_size * torch.sign(grad)
            x_adv_1 = torch.clamp(torch.min(torch.max(x_adv_1, x - eps), x + eps), 0.0, 1.0)
            x_adv_1 = torch.clamp(torch.min(torch.max(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a), x - eps),
                                            x + eps), 0.0, 1.0)
            x_adv = x_adv_1 + 0.0
        x_adv.requires_grad_()
        with torch.enable_grad():
            logits = model(x_adv)
            loss_indiv = loss_of(logits)
        grad = torch.autograd.grad(loss_indiv.sum(), [x_adv])[0].detach()
        pred = logits.detach().max(1)[1] == y
        acc = torch.min(acc, pred)
        with torch.no_grad():
            y1 = loss_indiv.detach().clone()
            loss_steps[i] = y1 + 0
            ind = (y1 > loss_best).nonzero().squeeze()
            x_best[ind] = x_adv[ind].clone()
            grad_best[ind] = grad[ind].clone()
            loss_best[ind] = y1[ind] + 0
            counter3 += 1
            if counter3 == k:
                t = torch.zeros(x.shape[0])
                for counter5 in range(k):
                    t += (loss_steps[i - counter5] > loss_steps[i - counter5 - 1]).float()
                fl_oscillation = (t <= k * rho * torch.ones_like(t)).float()
                fl_reduce_no_impr = (1.0 - reduced_last_check) * (loss_best_last_check >= loss_best).float()
                fl_oscillation = torch.max(fl_oscillation, fl_reduce_no_impr)
                reduced_last_check = fl_oscillation.clone()
                loss_best_last_check = loss_best.clone()
                if fl_oscillation.sum() > 0:
                    ind_fl_osc = (fl_oscillation > 0).nonzero().squeeze()
                    step_size[ind_fl_osc] /= 2.0
                    x_adv[ind_fl_osc] = x_best[ind_fl_osc].clone()
                    grad[ind_fl_osc] = grad_best[ind_fl_osc].clone()
                k = max(k - size_decr, n_iter_min)
                counter3 = 0
    return ~acc, x_best


def test_apgd_t_breaks_exactly_the_points_the_reference_algorithm_breaks(undefended):
    """The batched APGD-T (every target of a point in one batch, a broken point leaves at once) against the
    reference's loop on the same starts: per point, broken by the one exactly when broken by the other."""
    model, x, y = undefended
    keep = model.predict(x) == y
    x, y = x[keep][:60], y[keep][:60]
    eps, steps = 0.05, 25
    attack = APGD(steps=steps, loss="dlr-targeted", n_targets=9)
    starts = {}

    def recorded_start(x0, eps_, gen, limits):
        starts["x"] = APGD.random_start(attack, x0, eps_, gen, limits)
        return starts["x"]

    attack.random_start = recorded_start
    broken, x_adv, _ = attack.perturb(model, x, y, eps, torch.Generator().manual_seed(0))

    targets = model(x).argsort(1, descending=True)[:, 1:10]  # the 9 classes after the (true) top one
    rows = torch.arange(len(x)).repeat_interleave(9)
    hit, best = reference_apgd_t(model, x[rows], y[rows], targets.reshape(-1), eps, steps, starts["x"])
    expected = hit.view(len(x), 9).any(1)
    assert 0 < int(expected.sum()) < len(x)  # a radius where the answer is not trivial
    assert torch.equal(broken, expected)
    # a robust point's rows all run to the end: it returns its first target's best iterate, the reference's
    assert torch.allclose(x_adv[~broken], best.view(len(x), 9, *x.shape[1:])[~broken, 0], atol=1e-6)
    assert admissible(x[broken], x_adv[broken], eps, "linf", (0.0, 1.0)).all()
    assert (model.predict(x_adv[broken]) != y[broken]).all()


@pytest.mark.parametrize("eps", [0.03, 0.06])
def test_apgd_t_breaks_what_torchattacks_apgd_t_breaks(eps, undefended):
    """On the same points and budget, robrep's APGD-T leaves robust no point torchattacks' APGDT breaks, beyond
    what different random starts allow (one point in a hundred)."""
    model, x, y = undefended
    keep = model.predict(x) == y
    x, y = x[keep][:150], y[keep][:150]
    ours = APGD(steps=50, loss="dlr-targeted", n_targets=9).run(model, x, y, [0.0, eps], seed=0)
    theirs = TorchattacksAttack("APGDT", {"steps": 50, "n_restarts": 1, "n_classes": 10}).run(
        model, x, y, [0.0, eps], seed=0)
    only_theirs = int((ours.robust[eps] & ~theirs.robust[eps]).sum())
    assert 0 < int((~theirs.robust[eps]).sum()) < len(x)
    assert only_theirs <= len(x) // 100, only_theirs
    assert int(ours.robust[eps].sum()) <= int(theirs.robust[eps].sum()) + len(x) // 100


def test_apgd_losses_and_settings():
    logits = torch.tensor([[3.0, 1.0, 0.5, 0.0, -1.0]])
    # targeted DLR: -(z_y - z_t) / (z_max - (z_3rd + z_4th) / 2)
    assert torch.allclose(dlr_targeted(logits, torch.tensor([0]), torch.tensor([2])),
                          torch.tensor([-(3.0 - 0.5) / (3.0 - 0.25)]))
    with pytest.raises(ValueError):
        APGD(loss="cw")
    with pytest.raises(ValueError):
        APGD(steps=0)
    assert APGD(loss="dlr-targeted").name == "APGD-T" and APGD().name == "APGD-CE"
    from robrep.attacks import ATTACKS

    with pytest.raises(ValueError, match="four classes"):
        ATTACKS.create("native/APGD-T", 3)
