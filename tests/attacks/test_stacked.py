"""Stacked cells (robrep.attacks.stacked): the tasks of one encoder attacked in one pass give each task exactly
what it gets attacked alone, on a trained encoder with probes of different widths."""
import copy
import math

import pytest
import torch

from robrep.attacks import stacked as stacked_module
from robrep.attacks.apgd import APGD
from robrep.attacks.pgd import PGD
from robrep.attacks.stacked import Cell, Stacked, can_stack, run_stacked, stack_rows
from robrep.probes import ProbedEncoder, features, train_probe


@pytest.fixture(scope="module")
def tasks(undefended, mnist5k):
    """Three tasks on one trained encoder: the digit (10 classes), high digit (2) and digit mod 3 (3), each with its
    own probe, on the same 300 test digits."""
    model, x, y = undefended
    encoder = model.encoder
    labels = mnist5k.train.labels["digit"]
    feats = features(encoder, mnist5k.train.images)
    made = []
    for relabel, k in ((lambda v: v, 10), (lambda v: (v >= 5).long(), 2), (lambda v: v % 3, 3)):
        made.append(Cell(ProbedEncoder(encoder, train_probe(feats, relabel(labels), k)), x, relabel(y)))
    assert len({id(c.model.encoder) for c in made}) == 1
    return made


def same(a, b):
    assert a.radii == b.radii and a.seeds == b.seeds and a.attacked == b.attacked and a.rejected == b.rejected
    assert torch.equal(a.clean_correct, b.clean_correct)
    for r in a.radii:
        assert torch.equal(a.robust[r], b.robust[r]), r
        assert torch.equal(a.late[r], b.late[r]), r
        # the examples: the same up to the last bits of a float (matrix kernels split a batch by its size)
        assert torch.allclose(a.x_adv[r], b.x_adv[r], rtol=0, atol=1e-6), r
        assert a.evidence.get(r) == b.evidence.get(r), r


@pytest.mark.parametrize("norm, radii, loss", [("linf", [0.0, 0.03, 0.06, 0.1], "ce"),
                                               ("l2", [0.0, 0.5, 1.0, 1.5], "ce+margin")])
def test_stacked_tasks_get_exactly_what_they_get_alone(tasks, norm, radii, loss):
    attack = PGD(steps=20, restarts=3, norm=norm, loss=loss)
    alone = [attack.run(c.model, c.x, c.y, radii, seed=0) for c in tasks]
    stacked = run_stacked(attack, tasks, radii, seed=0)
    for a, b in zip(alone, stacked):
        same(a, b)
    # not trivial: every task has points broken and points left at the middle radius, and the tasks differ
    mid = radii[2]
    assert all(0 < int(res.robust[mid].sum()) < int(res.clean_correct.sum()) for res in alone)
    assert not torch.equal(alone[0].robust[mid], alone[1].robust[mid])


def test_stacked_cascade_stages_and_parts_match(tasks):
    """As a cascade's later stage (each task with its own prior), in parts smaller than a task (several parts per
    radius, each task's drawn from its own generator in turn)."""
    radii = [0.0, 0.04, 0.08]
    first = PGD(steps=5, restarts=1)
    priors = [first.run(c.model, c.x, c.y, radii, seed=1) for c in tasks]
    later = PGD(steps=15, restarts=2, loss="margin")
    cells = [Cell(c.model, c.x, c.y, p) for c, p in zip(tasks, priors)]
    alone = [later.run(c.model, c.x, c.y, radii, seed=0, prior=c.prior, batch_size=70) for c in cells]
    stacked = run_stacked(later, cells, radii, seed=0, batch_size=70)
    for a, b in zip(alone, stacked):
        same(a, b)
    # passes of at most 150 rows: the three cells' parts of up to 70 points go two and one to a pass
    for a, b in zip(alone, run_stacked(later, cells, radii, seed=0, batch_size=70, max_rows=150)):
        same(a, b)
    assert any(int((p.robust[0.08] & ~a.robust[0.08]).sum()) > 0 for p, a in zip(priors, alone))


def test_a_stacked_pass_holds_no_more_rows_than_the_encoders_activations_allow(tasks, monkeypatch):
    """Rows per pass: MAX_ROWS for a small encoder; where a row's activations are large, as many as STACK_BYTES
    of them, and never fewer than one cell's part; the passes keep to it and the answers stay those alone."""
    from robrep.nets import ResNet18Encoder

    encoder, x = tasks[0].model.encoder, tasks[0].x
    assert stack_rows(encoder, x, 100) == stacked_module.MAX_ROWS
    per_row = (stacked_module._saved_bytes(encoder, x[:3]) - stacked_module._saved_bytes(encoder, x[:1])) / 2
    assert per_row > 0
    monkeypatch.setattr(stacked_module, "STACK_BYTES", math.ceil(per_row * 250))
    assert stack_rows(encoder, x, 100) == 250  # the activations' budget, between a part and MAX_ROWS
    assert stack_rows(encoder, x, 400) == 400  # never fewer than one cell's part
    big = ResNet18Encoder((3, 64, 64), 8).eval().requires_grad_(False)  # ~18 MiB per row: a part's worth only
    monkeypatch.setattr(stacked_module, "STACK_BYTES", 2 ** 30)
    assert stack_rows(big, torch.rand(2, 3, 64, 64), 1000) == 1000
    # the default pass size follows: three cells of 90-point parts, at most 250 rows (two parts) a pass
    monkeypatch.setattr(stacked_module, "STACK_BYTES", math.ceil(per_row * 250))
    seen = []
    group = stacked_module._attack_group
    monkeypatch.setattr(stacked_module, "_attack_group", lambda a, e, g, *rest: (seen.append(sum(len(p) for _, p in g)),
                                                                                   group(a, e, g, *rest)))
    attack, radii = PGD(steps=10, restarts=1), [0.0, 0.05]
    alone = [attack.run(c.model, c.x, c.y, radii, seed=0, batch_size=90) for c in tasks]
    for a, b in zip(alone, run_stacked(attack, tasks, radii, seed=0, batch_size=90)):
        same(a, b)
    assert seen and max(seen) <= 250 and max(seen) > 90


def test_what_cannot_be_stacked_is_refused(tasks):
    other = ProbedEncoder(copy.deepcopy(tasks[0].model.encoder), tasks[0].model.probe)  # an equal, other encoder
    models = [c.model for c in tasks]
    assert can_stack(PGD(steps=2, restarts=1), models)
    assert not can_stack(PGD(steps=2, restarts=1), models[:1])  # one cell: nothing to stack
    assert not can_stack(APGD(steps=2), models)  # an attack that does not name its rows

    class OwnStart(PGD):  # a variant that draws its random start itself: attacked one cell at a time
        def random_start(self, x, eps, gen, bounds):
            return x.clone()

    assert not can_stack(OwnStart(steps=2, restarts=1), models)
    assert not can_stack(PGD(steps=2, restarts=1), [models[0], other])
    with pytest.raises(ValueError, match="cannot stack"):
        run_stacked(APGD(steps=2), tasks, [0.0, 0.1], seed=0)
    model = Stacked(tasks[0].model.encoder, [c.model.probe for c in tasks], [], [1, 1, 1])
    with pytest.raises(RuntimeError, match="name the rows"):
        model(tasks[0].x[:3])  # a query without its rows
    model.expect(torch.tensor([2, 1, 0]))
    with pytest.raises(RuntimeError, match="in the order of their cells"):
        model(tasks[0].x[:3])  # rows of the third cell before the first's: the slices would be wrong
