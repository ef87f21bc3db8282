"""The sentence a board's sandwich supports: proven only where one encoder's certified lower bound is above the
other's attacked upper bound."""
import pytest

from robrep.board.sandwich import provable
from robrep.rows.files import read_results
from tests.fixtures import REPO


@pytest.fixture(scope="module")
def board():
    rows = read_results(REPO / "leaderboard" / "mnist5k-linf.csv")
    return rows[rows["learner"].isin(["vae", "se-adversarial"]) & (rows["arch"] == "mlp")
                & (rows["probe"] == "standard")].copy()


def test_proven_only_where_the_certified_bound_clears_the_attacked_one(board):
    worst = board["suite"] == "worst-case"
    se = worst & (board["learner"] == "se-adversarial")
    vae_at = board[worst & (board["learner"] == "vae")].set_index("radius")["adversarial_accuracy"]
    uncertified = board.assign(certified_accuracy=float("nan"))
    assert "no certified lower bound" in provable(uncertified, "se-adversarial", "vae", "digit")
    below = board.copy()
    below.loc[se, "certified_accuracy"] = 0.0
    assert "nothing is proven" in provable(below, "se-adversarial", "vae", "digit")
    above = board.copy()
    above.loc[se, "certified_accuracy"] = [min(1.0, vae_at[r] + 0.01) if r == 0.05 else 0.0
                                           for r in above.loc[se, "radius"]]
    text = provable(above, "se-adversarial", "vae", "digit")
    assert text.startswith("at radius 0.05, se-adversarial's certified robust accuracy") and "provably" in text
    assert "radius 0.1" not in text
    with pytest.raises(ValueError, match="no worst-case rows"):
        provable(board, "se-adversarial", "simclr", "digit")


def test_a_row_whose_certified_bound_is_above_its_attacked_one_is_refused_from_publishing(tmp_path):
    from robrep.board.admission import row_errors
    from robrep.board.leaderboard import LeaderboardError, publish
    from robrep.rows.files import write_results

    rows = read_results(REPO / "leaderboard" / "mnist5k-linf.csv")
    rows = rows[rows["run"] == rows[rows["certified_accuracy"].notna()]["run"].iloc[0]].copy()
    assert all(not row_errors(r) for r in rows.to_dict("records"))
    attacked = rows["radius"] > 0
    rows.loc[attacked, "certified_accuracy"] = rows.loc[attacked, "adversarial_accuracy"] + 0.05
    bad = tmp_path / "bad.csv"
    write_results(bad, rows)
    with pytest.raises(LeaderboardError, match="certified accuracy .* is above the attacked"):
        publish([bad], out=tmp_path / "board")
    assert not (tmp_path / "board").exists() or not any((tmp_path / "board").iterdir())


def test_republishing_one_probe_of_a_run_keeps_its_other_probe(tmp_path):
    """--replace drops the board's rows of the republished run under the same probe only."""
    import shutil

    from robrep.board.leaderboard import publish
    from robrep.rows.files import write_results

    board = tmp_path / "leaderboard"
    board.mkdir()
    shutil.copy(REPO / "leaderboard" / "mnist5k-linf.csv", board)
    shutil.copy(REPO / "leaderboard" / "entries.toml", board)
    rows = read_results(board / "mnist5k-linf.csv")
    vae = rows[(rows["learner"] == "vae") & (rows["arch"] == "mlp")]
    assert set(vae["probe"]) == {"standard", "adversarial linf 0.1"}
    again = tmp_path / "again.csv"
    write_results(again, vae[vae["probe"] == "standard"])
    publish([again], out=board, replace=True)
    after = read_results(board / "mnist5k-linf.csv")
    mine = after[(after["learner"] == "vae") & (after["arch"] == "mlp")]
    assert (mine["probe"] == "adversarial linf 0.1").sum() == (vae["probe"] == "adversarial linf 0.1").sum()
    assert len(after) == len(rows)
