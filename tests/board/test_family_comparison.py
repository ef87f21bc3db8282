"""The family comparison: one row per learner under each probe, its training time against the VAE's, and the
Smooth Encoder's standing said in words, ahead of or behind whoever is."""
import pandas as pd
import pytest

from robrep.board.families import family_table, plot_families, standing
from robrep.rows.files import read_results
from tests.fixtures import REPO


@pytest.fixture(scope="module")
def board():
    """The published board's paper learners (MLP, standard probe): what the tests add to it is theirs."""
    rows = read_results(REPO / "leaderboard" / "mnist5k-linf.csv")
    return rows[rows["learner"].isin(["vae", "beta-vae", "se-random", "se-adversarial"]) & (rows["arch"] == "mlp")
                & (rows["probe"] == "standard")]


def _as(board, learner, scale=1.0, probe="standard", train=None):
    """The VAE's rows relabelled as another learner: its robust accuracies scaled, its probe and training time."""
    rows = board[board["learner"] == "vae"].copy()
    sha = (learner + probe).encode().hex()[:64].ljust(64, "0")
    rows = rows.assign(learner=learner, label=learner, run=f"{learner}-{probe}", encoder_sha256=sha, probe=probe)
    attacked = rows["radius"] > 0
    rows.loc[attacked, "adversarial_accuracy"] = (rows.loc[attacked, "adversarial_accuracy"] * scale).clip(0, 1)
    if train is not None:
        rows["train_seconds"] = train
    return rows


def test_one_row_per_learner_with_both_probes_and_the_training_time_against_the_vae(board):
    vae_time = float(board[board["learner"] == "vae"]["train_seconds"].max())
    more = pd.concat([board, _as(board, "simclr", train=3 * vae_time),
                      _as(board, "simclr", scale=4.0, probe="adversarial linf 0.1", train=3 * vae_time)])
    table = family_table(more, task="digit")
    simclr = table[table["learner"] == "simclr"].iloc[0]
    vae = table[table["learner"] == "vae"].iloc[0]
    assert simclr["family"] == "contrastive" and not simclr["uses_labels"]
    assert simclr["robust_standard"] == pytest.approx(vae["robust_standard"])
    assert simclr["robust_adversarial"] == pytest.approx(min(1.0, 4 * vae["robust_standard"]))
    assert simclr["train_vs_vae"] == pytest.approx(3.0) and vae["train_vs_vae"] == pytest.approx(1.0)
    assert list(table["robust_standard"]) == sorted(table["robust_standard"], reverse=True)


def test_the_standing_says_who_is_ahead_of_the_smooth_encoder(board, tmp_path):
    alone = standing(family_table(board, task="digit"))
    assert "1st of 4 learners from 2 families" in alone and "ahead of se-random" in alone
    se = float(board[(board["learner"] == "se-adversarial") & (board["suite"] == "worst-case")
                     & (board["radius"] == 0.1)]["adversarial_accuracy"].iloc[0])
    vae = float(board[(board["learner"] == "vae") & (board["suite"] == "worst-case")
                      & (board["radius"] == 0.1)]["adversarial_accuracy"].iloc[0])
    beaten = pd.concat([board, _as(board, "supervised-at", scale=(se + 0.1) / vae)])
    table = family_table(beaten, task="digit")
    text = standing(table)
    assert "2nd of 5 learners from 3 families behind supervised-at" in text and "uses labels" in text
    assert plot_families(table, tmp_path / "f.png", "t").read_bytes()[:4] == b"\x89PNG"
