"""The headline table (robrep.board.headline): one ranked row per encoder and protocol, on the published board and on
a real bench's rows."""
from pathlib import Path

import pandas as pd
import pytest

from robrep.board.headline import headline_markdown, headline_table
from robrep.rows import read_results
from fixtures import REPO

BOARD = REPO / "leaderboard" / "experiments" / "mnist5k-linf.csv"  # several protocols per encoder


@pytest.fixture(scope="module")
def published():
    """The paper's runs as published: the experiments and the archive (the label fractions' earlier runs)."""
    import pandas as pd

    return pd.concat([read_results(BOARD), read_results(BOARD.parent.parent / "archive" / BOARD.name)],
                     ignore_index=True)


def test_the_published_board_shows_each_protocol_of_an_encoder_as_its_own_ranked_row(published):
    table = headline_table(published)
    digit = table[(table["dataset"] == "mnist5k") & (table["task"] == "digit")]
    assert list(digit["rank"]) == list(range(1, len(digit) + 1))
    head = table.attrs["headline"][("mnist5k", "digit", "linf", "standard")]
    assert head == 0.1 and digit["headline"].is_monotonic_decreasing  # ranked by robust accuracy at 0.1
    # the paper's SE (run 7231bd0d): four worst-case protocols, four rows (500 points; 1,000 at 1%, 10%, 100%)
    se = digit[(digit["run"] == "se-adversarial-mnist5k-mlp-s0-7231bd0d") & digit["measure"].str.startswith("worst")]
    assert sorted(zip(se["n_examples"], se["label_fraction"])) == [(500, 1.0), (1000, 0.01), (1000, 0.1), (1000, 1.0)]
    assert se["r=0.1"].nunique() == 4
    # an encoder with no worst case is shown by its strongest single attack, and marked
    beta = digit[digit["label"] == "beta-vae"]
    assert len(beta) == 1 and beta["measure"].iloc[0] == "single attack: native/pgd"
    assert beta["budget"].iloc[0] == "1 attack, 100 x 10"
    worst = digit[digit["measure"].str.startswith("worst")]
    assert worst["budget"].str.startswith("10 attacks, 100 x 10, 5000 queries").all()


def test_rows_that_differ_in_a_protocol_field_are_never_merged(published):
    run = "se-adversarial-mnist5k-mlp-s0-7231bd0d"
    rows = published[(published["run"] == run) & (published["n_examples"] == 1000)
                     & (published["label_fraction"] == 1.0)]
    other_seed = rows.assign(seed=1, adversarial_accuracy=rows["adversarial_accuracy"] * 0.5)
    table = headline_table(pd.concat([rows, other_seed], ignore_index=True))
    assert sorted(table["seed"]) == [0, 1] and table["r=0.1"].nunique() == 2
    assert table.iloc[0]["seed"] == 0 and table.iloc[0]["rank"] == 1  # the better one first


def test_the_markdown_shows_the_headline_first_and_the_per_attack_detail_after(published):
    from robrep.board.leaderboard import render_markdown

    md = render_markdown(published, "mnist5k, linf threat model")
    first = md.index("## mnist5k / digit (linf): ranked by robust accuracy at radius 0.1")
    assert first < md.index("# Per-attack detail")
    lines = headline_markdown(headline_table(published))
    assert lines[2].startswith("| rank | encoder | arch | clean | r=0.05 | r=0.1 |")
    assert lines[4].startswith("| 1 | ") and "**" in lines[4]  # the headline radius in bold


def test_the_terminal_detail_shows_every_protocol_not_the_first_value(capsys):
    from robrep.cli import main

    assert main(["leaderboard", "--detail", "--out", str(BOARD.parent)]) == 0
    out = capsys.readouterr().out
    worst = [line for line in out.splitlines()
             if "se-adversarial-mnist5k-mlp-s0-7231bd0d" in line and "worst-case" in line]
    assert len(worst) == 2 and {line.split("│")[3].strip() for line in worst} == {"500", "1000"}


def test_a_row_that_only_had_not_converged_is_passed_with_a_warning_and_a_broken_check_is_a_failure():
    board = read_results(REPO / "leaderboard" / "colormnist5k-linf.csv")
    worst = board[board["suite"] == "worst-case"]
    se = worst[worst["learner"] == "se-adversarial"].copy()
    assert (~se["check_converged"].astype(bool)).any()  # the published SE did not converge at 0.15 and 0.2
    table = headline_table(se)
    color = table[table["task"] == "color"].iloc[0]
    assert color["checks"] == "passed, not converged at 2 radii"
    # the same rows with a guard that failed at one radius: a failure, counted by radius
    broken = se.copy()
    first = broken.index[(broken["task"] == "color") & (broken["radius"] == 0.05)][0]
    broken.loc[first, ["check_guards", "checks_passed"]] = [False, False]
    color = headline_table(broken).query("task == 'color'").iloc[0]
    assert color["checks"] == "1 failed, not converged at 2 radii"


def test_a_worst_case_whose_pgd_used_another_loss_says_so():
    l2 = headline_table(read_results(REPO / "leaderboard" / "mnist5k-l2.csv"))
    assert (l2["measure"] == "worst case (cascade; PGD on ce+margin)").all()  # the L2 protocol's loss
    linf = headline_table(read_results(REPO / "leaderboard" / "mnist5k-linf.csv"))
    assert (linf["measure"] == "worst case (cascade)").all()  # cross-entropy: nothing to say
