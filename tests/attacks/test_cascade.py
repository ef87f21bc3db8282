"""The cascaded worst case: the order, no attack twice, the same worst case as every attack on every point,
resume from the stage a killed run stopped in, and the gradient-masking warning."""
import pandas as pd
import pytest
import torch
from torch import nn

from robrep.attacks import PGD, TorchattacksAttack, suite_attacks
from robrep.attacks.cascade import cascade, cost_rank
from robrep.harness import bench, run_cell, worst_case_rows
from robrep.harness import execute

SMALL = dict(learners=("vae",), epochs=1, radii=(0.0, 0.1, 0.2), steps=5, restarts=2, n_examples=40)


def _names(attacks):
    return [f"{a.suite}/{a.name}" for a in attacks]


def test_cheap_attacks_first_black_box_last_and_no_autoattack_part_twice():
    attacks = suite_attacks(("native", "torchattacks", "foolbox"), 10, steps=100, restarts=10, norm="linf")
    order = cascade(attacks)
    ranks = [cost_rank(a) for a in order]
    assert ranks == sorted(ranks) and order[0].name == "FGSM" and order[-1].name == "Square"
    auto = [a for a in order if a.name.startswith("AutoAttack")]
    # APGD-CE (100 steps x 10 restarts) and Square (5,000 queries) run as attacks of their own: AutoAttack keeps
    # only its targeted parts, at their published budgets
    assert len(auto) == 1 and auto[0].attack == "Parts"
    assert [name for name, _ in auto[0].kwargs["parts"]] == ["APGDT", "FAB"]
    assert all(kw["steps"] == 100 for _, kw in auto[0].kwargs["parts"])
    assert "APGD-CE 100, Square 5000 ran as own stages" in auto[0].name
    assert len(order) == len(attacks)
    # a smaller standalone budget does not cover AutoAttack's part: APGD-CE 100 stays in it
    auto = next(a for a in attacks if a.name.startswith("AutoAttack"))
    apgd10 = TorchattacksAttack("APGD", {"loss": "ce", "steps": 10, "n_restarts": 10}, label="APGD-CE")
    rest = [a for a in cascade([apgd10, auto]) if a.name.startswith("AutoAttack")][0]
    assert rest is auto  # nothing covered: AutoAttack whole, APGD-CE 100 included
    # two classes: the binary AutoAttack's parts (APGD-CE, FAB, Square) all run on their own; it is not run again
    binary = cascade(suite_attacks(("torchattacks",), 2, steps=100, restarts=10, norm="linf"))
    assert not any(a.name.startswith("AutoAttack") for a in binary) and len(binary) == 4


def test_the_cascade_gives_the_worst_case_of_every_attack_on_every_point(tmp_path):
    suites = ("native", "foolbox")
    chained = bench(out=str(tmp_path / "c"), suites=suites, **SMALL)
    each = bench(out=str(tmp_path / "p"), suites=suites, worst_case="per-attack", **SMALL)
    assert set(chained["protocol"]) == {"cascade"} and set(each["protocol"]) == {"per-attack"}
    wc = chained[chained["suite"] == "worst-case"].set_index("radius")["adversarial_accuracy"]
    wp = each[each["suite"] == "worst-case"].set_index("radius")["adversarial_accuracy"]
    assert (wc - wp).abs().max() <= 0.05, (wc, wp)  # 40 points: two of them, seed noise of the attacks
    stages = chained[chained["suite"] != "worst-case"]
    for r, at_r in stages.groupby("radius"):
        robust = round(wc[r] * 40)
        clean = round(at_r["nominal_accuracy"].iloc[0] * 40)
        # every correctly classified point is broken first by exactly one stage, or survives them all
        assert int(at_r["n_broken_first"].sum()) + robust == clean
        assert (at_r["adversarial_accuracy"] >= wc[r] - 1e-9).all()
    # each stage attacked only what the stages before it left: fewer points than every attack on every point
    r = 0.1
    assert stages[stages["radius"] == r]["n_attacked"].sum() < each[(each["radius"] == r)
                                                                    & (each["suite"] != "worst-case")]["n_attacked"].sum()
    assert chained[chained["suite"] == "worst-case"]["checks_passed"].all()
    from robrep.board.leaderboard import render_markdown

    page = render_markdown(chained, "cascade")  # a stage's number is the cascade's so far, and says so
    assert "FGSM (cascade stage 1, with the attacks before it)" in page and "worst case of 5 attacks (cascade)" in page


def test_a_killed_cascade_resumes_at_the_stage_it_stopped_in(tmp_path, monkeypatch):
    suites = ("native", "foolbox")
    whole = bench(out=str(tmp_path / "whole"), suites=suites, **SMALL)
    real, calls = execute.run_cell, []

    def dies_in_the_third_stage(*a, **k):
        calls.append(a[3].name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(execute, "run_cell", dies_in_the_third_stage)
    with pytest.raises(KeyboardInterrupt):
        bench(out=str(tmp_path / "killed"), suites=suites, **SMALL)
    monkeypatch.setattr(execute, "run_cell", lambda *a, **k: (calls.append(a[3].name), real(*a, **k))[1])
    resumed = bench(out=str(tmp_path / "killed"), suites=suites, **SMALL)
    assert len(calls) == 3 + 3  # the two finished stages were not run again; the third and the rest were
    cols = ["suite", "attack", "radius", "adversarial_accuracy", "n_broken_first", "checks_passed"]
    key = ["suite", "attack", "radius"]
    pd.testing.assert_frame_equal(whole[cols].sort_values(key).reset_index(drop=True),
                                  resumed[cols].sort_values(key).reset_index(drop=True))


class _Rounded(nn.Module):
    """Inputs rounded to 1/8 before the model: the gradient is zero almost everywhere (masked)."""

    bounds = (0.0, 1.0)

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 8) / 8)


def test_a_black_box_attack_breaking_what_every_gradient_attack_missed_is_flagged(undefended):
    model, x, y = undefended
    masked = _Rounded(model).eval()
    x, y = x[:100], y[:100]
    radii = [0.0, 0.15]
    pgd = PGD(steps=10, restarts=1)
    square = TorchattacksAttack("Square", {"n_queries": 300, "n_restarts": 1}, kind="black-box")
    square.suite = "torchattacks"
    cells, prior = [], None
    for k, attack in enumerate([pgd, square]):
        rows, masks = run_cell(masked, x, y, attack, radii, seed=0, prior=prior, cascade=True)
        df = pd.DataFrame(rows).assign(norm="linf", protocol="cascade", n_examples=len(x))
        cells.append((attack, df, masks))
        prior = masks
    first = int(cells[1][1].set_index("radius").loc[0.15, "n_broken_first"])
    assert first > 0.02 * len(x), first  # Square broke points the zero gradient hid from PGD
    worst = {w["radius"]: w for w in worst_case_rows({}, cells, radii)}
    assert "possible gradient masking" in worst[0.15]["warnings"] and f"broke {first} of 100" in worst[0.15]["warnings"]
    # on the model itself, PGD leaves Square little: no warning
    cells, prior = [], None
    for attack in [pgd, square]:
        rows, masks = run_cell(model, x, y, attack, radii, seed=0, prior=prior, cascade=True)
        cells.append((attack, pd.DataFrame(rows).assign(norm="linf", protocol="cascade", n_examples=len(x)), masks))
        prior = masks
    clean = {w["radius"]: w for w in worst_case_rows({}, cells, radii)}
    assert "gradient masking" not in clean[0.15]["warnings"]
