"""The torchattacks and foolbox suites beside the native one, and the per-example worst case."""
import pandas as pd
import pytest

from fixtures import sound
from robrep.attacks import SUITES, suite_attacks
from robrep.checks import check_result
from robrep.rows import CHECK_COLUMNS
from robrep.harness import bench, consistency_warnings
from robrep.probes import ProbedEncoder, features, train_probe

SMALL = dict(steps=10, restarts=2, norm="linf")


def _cases():
    for suite in ("native", "torchattacks", "foolbox"):
        for i, attack in enumerate(SUITES.create(suite, 10, **SMALL)):
            yield pytest.param(suite, i, id=f"{suite}-{attack.name}")


@pytest.mark.parametrize("suite,i", list(_cases()))
def test_every_attack_of_every_suite_lowers_accuracy_and_passes_the_checks(suite, i, undefended):
    model, x, y = undefended
    x, y = x[:80], y[:80]
    attack = suite_attacks([suite], 10, **SMALL)[i]
    if attack.kind == "black-box":  # a black-box attack needs its queries: 5 per step and restart, 1,000 here
        attack = suite_attacks([suite], 10, **{**SMALL, "restarts": 20})[i]
    res = attack.run(model, x, y, [0.0, 0.1], seed=0)
    clean = (model.predict(x) == y).float().mean().item()
    assert res.accuracy(0.0) == clean > 0.5
    assert res.accuracy(0.1) < clean - 0.2, f"{attack!r} barely hurt an undefended model"
    checks = check_result(model, x, y, res, attack.norm, seed=0)
    assert all(checks[r][c] is not False for r in (0.0, 0.1) for c in CHECK_COLUMNS if c != "check_converged"), checks


@pytest.fixture(scope="module")
def binary(mnist5k, undefended):
    """The same encoder with a 2-class probe: is the digit >= 5?"""
    model, x, y = undefended
    labels = (mnist5k.train.labels["digit"] >= 5).long()
    probe = train_probe(features(model.encoder, mnist5k.train.images), labels, 2)
    return ProbedEncoder(model.encoder, probe), x[:60], (y[:60] >= 5).long()


@pytest.mark.parametrize("suite", ["native", "torchattacks", "foolbox"])
def test_two_class_tasks_work_in_every_suite(suite, binary):
    model, x, y = binary
    attacks = suite_attacks([suite], 2, **SMALL)
    if suite == "torchattacks":
        names = [a.name for a in attacks]
        assert any(n.startswith("AutoAttack-binary(APGD-CE ") for n in names)
        assert not any(n.startswith("AutoAttack-standard") for n in names)
    for attack in attacks:
        res = attack.run(model, x, y, [0.0, 0.15], seed=0)
        assert res.accuracy(0.15) < res.accuracy(0.0), repr(attack)
        checks = check_result(model, x, y, res, "linf", seed=0)
        assert all(checks[0.15][c] is not False for c in CHECK_COLUMNS if c != "check_converged"), (attack, checks[0.15])


def test_four_or_more_classes_get_standard_autoattack_with_the_task_classes():
    auto = [a for a in suite_attacks(["torchattacks"], 7, **SMALL) if a.name.startswith("AutoAttack")]
    assert auto[0].name.startswith("AutoAttack-standard") and auto[0].kwargs["n_classes"] == 7


def test_external_suites_run_in_l2_with_their_l2_attacks():
    names = {a.qualname: a for a in suite_attacks(["torchattacks", "foolbox"], 10, steps=5, restarts=1, norm="L2")}
    assert {"torchattacks/PGDL2", "torchattacks/APGD-CE", "torchattacks/APGD-DLR", "torchattacks/FAB",
            "torchattacks/Square", "foolbox/L2PGD", "foolbox/DDNAttack", "foolbox/L2DeepFoolAttack",
            "foolbox/L2BasicIterativeAttack"} <= set(names)
    assert all(a.norm == "l2" for a in names.values())
    assert names["torchattacks/APGD-DLR"].kwargs["loss"] == "dlr"
    # DLR needs three classes: a binary task's suite leaves it out
    binary = {a.qualname for a in suite_attacks(["torchattacks"], 2, steps=5, restarts=1, norm="l2")}
    assert "torchattacks/PGDL2" in binary and not any("DLR" in n for n in binary)
    with pytest.raises(ValueError, match="norm must be linf or l2"):
        suite_attacks(["foolbox"], 10, steps=5, restarts=1, norm="l1")


def test_worst_case_is_never_above_any_single_attack(tmp_path):
    df = bench(out=str(tmp_path), learners=("vae",), epochs=1, radii=(0.0, 0.1, 0.2), steps=5, restarts=1,
               n_examples=60, suites=("native", "foolbox"))
    worst = df[df["suite"] == "worst-case"].set_index("radius")["adversarial_accuracy"]
    singles = df[df["suite"] != "worst-case"]
    assert len(worst) == 3 and set(singles["attack"]) == {"pgd", "LinfPGD", "FGSM", "LinfDeepFoolAttack",
                                                           "LinfBasicIterativeAttack"}
    for _, row in singles.iterrows():
        assert worst[row["radius"]] <= row["adversarial_accuracy"]
    assert worst[0.0] == singles[singles["radius"] == 0.0]["adversarial_accuracy"].iloc[0]
    # (60 points: one point DeepFool never moved is more than 1% of them, so its row may fail exploration)
    assert sound(df[df["suite"].isin(["worst-case", "native"])])
    assert (tmp_path / "examples").is_dir()
    # resuming recomputes nothing and gives the same worst case
    again = bench(out=str(tmp_path), learners=("vae",), epochs=1, radii=(0.0, 0.1, 0.2), steps=5, restarts=1,
                  n_examples=60, suites=("native", "foolbox"))
    pd.testing.assert_series_equal(
        again[again["suite"] == "worst-case"].set_index("radius")["adversarial_accuracy"], worst)


def test_consistency_warnings():
    pgd, fgsm, square = suite_attacks(["native"], 10, **SMALL)[0], *[
        a for a in suite_attacks(["foolbox", "torchattacks"], 10, **SMALL) if a.name in ("FGSM", "Square")]
    assert consistency_warnings([(pgd, 0.30), (fgsm, 0.40), (square, 0.31)]) == []
    weak = consistency_warnings([(pgd, 0.50), (fgsm, 0.40)])
    assert len(weak) == 1 and "weaker than single-step" in weak[0]
    masked = consistency_warnings([(pgd, 0.50), (fgsm, 0.55), (square, 0.20)])
    assert len(masked) == 1 and "gradient masking" in masked[0]
    # AutoAttack ends with Square: its lower number must not hide Square beating every gradient attack
    auto = next(a for a in suite_attacks(["torchattacks"], 10, **SMALL) if a.name.startswith("AutoAttack-standard"))
    binary = next(a for a in suite_attacks(["torchattacks"], 2, **SMALL) if a.name.startswith("AutoAttack-binary"))
    assert auto.includes_black_box and binary.includes_black_box and not pgd.includes_black_box
    hidden = consistency_warnings([(pgd, 0.60), (square, 0.46), (auto, 0.43)])
    assert len(hidden) == 1 and "Square (0.460) beats every gradient attack (best 0.600)" in hidden[0]


def test_rows_record_restarts_including_the_library_s_own(tmp_path):
    df = bench(out=str(tmp_path), learners=("vae",), epochs=1, radii=(0.0,), steps=2, restarts=3, n_examples=10,
               suites=("native", "torchattacks"))
    restarts = df.drop_duplicates("attack").set_index("attack")["restarts"]
    assert restarts["pgd"] == 3 and restarts["PGD"] == 3 and restarts["APGD-CE"] == 3 and restarts["Square"] == 1


def test_foolbox_restarts_only_ever_help(undefended):
    from robrep.attacks import FoolboxAttack

    model, x, y = undefended
    x, y = x[:80], y[:80]
    radii = [0.0, 0.03, 0.06, 0.1]
    kw = {"steps": 5, "rel_stepsize": 0.5, "random_start": True}
    one = FoolboxAttack("LinfPGD", kw, restarts=1).run(model, x, y, radii, seed=0)
    three = FoolboxAttack("LinfPGD", kw, restarts=3).run(model, x, y, radii, seed=0)
    for r in radii:  # the same first call, then more chances at every radius, not just the largest
        assert not (three.robust[r] & ~one.robust[r]).any()


def test_autoattack_runs_at_its_published_budgets_with_the_paper_protocol_and_says_when_not():
    import json

    from robrep.attacks.external import COMPOSITIONS

    for n_classes in (10, 2):
        auto = next(a for a in suite_attacks(["torchattacks"], n_classes, steps=100, restarts=10, norm="linf")
                    if a.name.startswith("AutoAttack"))
        config = json.loads(json.dumps(auto.settings()))
        assert config["kwargs"]["steps"] == 100 and config["kwargs"]["n_queries"] == 5000
        assert "reduced" not in auto.name
        parts = COMPOSITIONS[auto.attack](auto.kwargs)
        assert all(kw.get("steps", 100) == 100 for _, kw in parts if _ != "Square")
        assert [kw["n_queries"] for name, kw in parts if name == "Square"] == [5000]
        # a small run is small throughout: every budget follows --steps x --restarts, and the label says so
        small = suite_attacks(["torchattacks", "foolbox"], n_classes, **SMALL)
        cheap = next(a for a in small if a.name.startswith("AutoAttack"))
        queries = 5 * SMALL["steps"] * SMALL["restarts"]
        assert cheap.kwargs["steps"] == SMALL["steps"] and cheap.kwargs["n_queries"] == queries
        assert f"Square {queries}, reduced budget)" in cheap.name
        assert next(a for a in small if a.name == "Square").kwargs["n_queries"] == queries
    standard = COMPOSITIONS["AutoAttackStandard"]({"n_classes": 10})
    assert [name for name, _ in standard] == ["APGD", "APGDT", "FAB", "Square"]
    assert standard[2][1]["multi_targeted"] and standard[1][1]["n_classes"] == 10


def test_library_attacks_that_take_gradients_themselves_run_without_them_and_keep_no_graph(undefended):
    """torchattacks' APGD index-assigns its iterate (which requires grad) into its best-so-far tensor; run with
    gradients on, that chains every iteration's iterate into one graph kept to the end of the run (memory that
    grows with the budget: 14 GB on colormnist5k's L2 protocol). robrep runs the attacks that switch gradients on
    themselves with them off: the same examples, and no tensors piling up over the iterations."""
    import gc
    import warnings

    import torch

    from robrep.attacks.external import TorchattacksAttack

    model, x, y = undefended
    x, y = x[:40], y[:40]

    class Counting(torch.nn.Module):
        bounds = (0.0, 1.0)

        def __init__(self):
            super().__init__()
            self.model, self.live = model, []

        def forward(self, q):
            with warnings.catch_warnings():  # gc's objects include torch's deprecated aliases
                warnings.simplefilter("ignore")
                self.live.append(sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor)))
            return self.model(q)

    for name, kwargs in (("APGD", {"loss": "ce", "steps": 30, "n_restarts": 1}),
                         ("APGDT", {"steps": 30, "n_restarts": 1, "n_classes": 10})):
        attack = TorchattacksAttack(name, kwargs, norm="l2")
        assert attack.grad_free
        counting = Counting()
        ours = attack.perturb(counting, x, y, 0.5, torch.Generator().manual_seed(0))[1]
        assert max(counting.live) - counting.live[2] < 50, (name, counting.live[2], max(counting.live))
        with torch.enable_grad():  # as before: gradients on throughout
            before = attack.restarted(model, x, y, 0.5, torch.Generator().manual_seed(0), None, 1,
                                      lambda xs, ys, seed: attack.build(model, 0.5, seed)(xs, ys), grad=True)[1]
        assert torch.equal(ours, before), name
    assert not TorchattacksAttack("PGD", {"steps": 5}).grad_free
    assert TorchattacksAttack("AutoAttackStandard", {"n_classes": 10}).grad_free
