"""Publishing results CSVs into the leaderboard."""
import pandas as pd
import pytest

from robrep.cli import main
from robrep.harness import bench
from robrep.leaderboard import LeaderboardError, publish
from robrep.plots import line_labels, plot_robustness, robustness_panels


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    mp.setenv("ROBREP_CACHE", str(tmp_path_factory.getbasetemp() / "robrep-cache"))
    bench(out=str(out), learners=("vae",), epochs=1, radii=(0.0, 0.1), steps=3, restarts=1, n_examples=50,
          images=0.1)
    bench(out=str(out / "l2"), learners=("vae",), epochs=1, radii=(0.0, 1.0), steps=3, restarts=1, n_examples=50,
          norm="l2")
    mp.undo()
    return out


def test_publish_writes_one_board_per_dataset_and_threat_model(results, tmp_path):
    written = publish([results, results / "l2" / "results.csv"], out=tmp_path)
    assert sorted(p.name for p in written) == ["mnist5k-l2.csv", "mnist5k-linf.csv"]
    board = pd.read_csv(tmp_path / "mnist5k-linf.csv")
    assert len(board) == 2 and board["adversarial_accuracy"].dtype == float
    assert "checkpoint" not in board.columns  # no machine-local paths in published files
    md = (tmp_path / "mnist5k-linf.md").read_text()
    assert "## digit" in md and "| vae |" in md
    assert (tmp_path / "mnist5k-linf.png").read_bytes()[:4] == b"\x89PNG"


def test_merging_the_same_results_twice_changes_nothing(results, tmp_path):
    publish([results], out=tmp_path)
    first = (tmp_path / "mnist5k-linf.csv").read_bytes()
    publish([results], out=tmp_path)
    assert (tmp_path / "mnist5k-linf.csv").read_bytes() == first


def test_mlp_and_convnet_encoders_get_their_own_panels_and_markdown_rows(results, tmp_path):
    mlp = pd.read_csv(results / "results.csv")
    conv = mlp.assign(arch="conv", run=mlp["run"].str.replace("-mlp-", "-conv-"), encoder_sha256="f" * 64)
    board = pd.concat([mlp, conv], ignore_index=True)
    panels = robustness_panels(board)
    assert [key[2] for key, _ in panels] == ["conv", "mlp"]
    assert all(len(rows) == len(mlp) for _, rows in panels)
    board.to_csv(tmp_path / "both.csv", index=False)
    publish([tmp_path / "both.csv"], out=tmp_path / "board")
    md = (tmp_path / "board" / "mnist5k-linf.md").read_text()
    assert "| vae | conv |" in md and "| vae | mlp |" in md


def test_plot_lines_are_told_apart_by_label_fraction_and_selection_settings(results):
    rows = pd.read_csv(results / "results.csv")
    se = rows.assign(learner="se-adversarial", label="se-adversarial", run="se-a", encoder_sha256="a" * 64,
                     learner_config='{"selection_eps": 0.1, "selection_steps": 20, "gamma": 50.0}')
    se_l50 = se.assign(run="se-b", encoder_sha256="b" * 64,
                       learner_config='{"selection_eps": 0.1, "selection_steps": 50, "gamma": 50.0}')
    few_labels = rows.assign(label_fraction=0.01)
    labels = line_labels(pd.concat([rows, few_labels, se, se_l50], ignore_index=True))
    vae_run = rows["run"].iloc[0]
    assert labels == {(vae_run, 1.0): "vae (labels 1)", (vae_run, 0.01): "vae (labels 0.01)",
                      ("se-a", 1.0): "se-adversarial (L 20, labels 1)",
                      ("se-b", 1.0): "se-adversarial (L 50, labels 1)"}
    more_points = rows.assign(n_examples=100)  # the same run on other test points: its own panel, not one line
    panels = robustness_panels(pd.concat([rows, more_points], ignore_index=True))
    assert [key[-1] for key, _ in panels] == [50, 100] and all(len(sub) == len(rows) for _, sub in panels)
    twin = se.assign(run="se-c", encoder_sha256="c" * 64)  # same label and settings: named by run
    assert line_labels(pd.concat([se, twin], ignore_index=True)) == {
        ("se-a", 1.0): "se-a (se-adversarial)", ("se-c", 1.0): "se-c (se-adversarial)"}


def test_rows_of_a_learner_without_an_architecture_are_published_not_dropped(results, tmp_path):
    rows = pd.read_csv(results / "results.csv")
    plugin = rows.assign(arch=None, learner="pca", label="pca", run=rows["run"].str.replace("vae", "pca"),
                         encoder_sha256="e" * 64)
    pd.concat([rows, plugin], ignore_index=True).to_csv(tmp_path / "both.csv", index=False)
    publish([tmp_path / "both.csv"], out=tmp_path / "board")
    md = (tmp_path / "board" / "mnist5k-linf.md").read_text()
    assert "| pca |  |" in md and "| vae | mlp |" in md
    assert len(pd.read_csv(tmp_path / "board" / "mnist5k-linf.csv")) == 2 * len(rows)


def test_a_worst_case_over_more_attacks_replaces_the_partial_one(results, tmp_path):
    rows = pd.read_csv(results / "results.csv")
    worst = rows[rows["suite"] == "native"].assign(suite="worst-case", attack="worst-case")
    partial = worst.assign(attack_config='["native/pgd"]')
    full = worst.assign(attack_config='["foolbox/FGSM", "native/pgd"]')
    other_points = partial.assign(n_examples=10)  # a worst case on other points is not superseded
    for name, df in [("partial", pd.concat([partial, other_points])), ("full", full)]:
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    publish([tmp_path / "partial.csv"], out=tmp_path / "board")
    publish([tmp_path / "full.csv"], out=tmp_path / "board")
    board = pd.read_csv(tmp_path / "board" / "mnist5k-linf.csv")
    assert sorted(board["attack_config"].unique()) == ['["foolbox/FGSM", "native/pgd"]', '["native/pgd"]']
    kept = board.set_index("attack_config")
    assert (kept.loc['["native/pgd"]', "n_examples"] == 10).all()
    assert len(kept.loc['["foolbox/FGSM", "native/pgd"]']) == len(full)


def test_a_run_folders_image_grids_are_published(results, tmp_path):
    grids = sorted((results / "images").glob("*.png"))
    assert len(grids) == 1 and "-mnist5k-digit-r0.1" in grids[0].name
    publish([results], out=tmp_path)
    assert (tmp_path / "images" / grids[0].name).read_bytes() == grids[0].read_bytes()
    publish([results / "results.csv"], out=tmp_path / "csv-only")  # a bare CSV brings no images
    assert not (tmp_path / "csv-only" / "images").exists()


def _honest_failure(df):
    """The first attacked row fails its noise floor, and says so consistently: admissible, but blocking."""
    i = df.index[(df["radius"] > 0) & (df["adversarial_accuracy"] > 0)][0]
    return df.assign(noise_accuracy=df["noise_accuracy"].where(df.index != i, 0.0),
                     check_noise_floor=df["check_noise_floor"].where(df.index != i, False),
                     checks_passed=df["checks_passed"].where(df.index != i, False))


@pytest.mark.parametrize("damage,message", [
    (lambda df: df.drop(columns=["encoder_sha256"]), "lacks the column"),
    (_honest_failure, "failed their checks"),
    # flags that contradict the row's own evidence, whatever checks_passed claims
    (lambda df: df.assign(check_explored=[False] + [True] * (len(df) - 1)), "not admissible"),
    (lambda df: df.assign(check_noise_floor=[False] + [True] * (len(df) - 1)), "check_noise_floor says False"),
    (lambda df: df.assign(noise_accuracy=0.0), "check_noise_floor says True but"),
    (lambda df: df.drop(columns=["check_noise_floor", "check_explored", "check_guards", "check_consistent"])
     .assign(checks_passed=True), "no check was recorded"),  # rows from before the checks
    (lambda df: df.assign(adversarial_accuracy=df["adversarial_accuracy"] * 100), "numbers in \\[0, 1\\]"),
    # issue 18's cases: adversarial above nominal with every flag True; empty provenance; a path for a name
    (lambda df: df.assign(adversarial_accuracy=1.0, recomputed_accuracy=1.0, noise_accuracy=1.0, checks_passed=True),
     "adversarial accuracy 1 is above the nominal"),
    (lambda df: df.assign(source="", machine=""), "provenance missing: source, machine"),
    (lambda df: df.assign(dataset="../../escaped"), "dataset '../../escaped' is not a plain name"),
    (lambda df: df.assign(dataset="mnist5k/../../escaped"), "is not a plain name"),
    (lambda df: df.assign(dataset="imagenet"), "'imagenet' is not a known data set"),
    (lambda df: df.assign(norm="../linf"), "norm '../linf' is not one of"),
    (lambda df: pd.concat([df, df[df["radius"] == 0.1].assign(  # at 0.05 below its own 0.1: rising with radius
        radius=0.05, adversarial_accuracy=lambda d: d["adversarial_accuracy"] - 0.02,
        recomputed_accuracy=lambda d: d["recomputed_accuracy"] - 0.02)]), "rises with the radius: "),
])
def test_bad_results_are_refused_and_nothing_is_written(results, tmp_path, damage, message):
    bad = tmp_path / "deep" / "er" / "bad.csv"
    bad.parent.mkdir(parents=True)
    damage(pd.read_csv(results / "results.csv")).to_csv(bad, index=False)
    before = {p for p in tmp_path.rglob("*")}
    with pytest.raises(LeaderboardError, match=message):
        publish([results, bad], out=tmp_path / "deep" / "er" / "board")
    assert {p for p in tmp_path.rglob("*")} == before  # nothing written, inside --out or outside it


def test_a_refusal_names_every_bad_row_and_its_reason(results, tmp_path):
    df = pd.read_csv(results / "results.csv")
    df.loc[df.index[0], "source"] = ""
    df.loc[df.index[1], "norm"] = "../x"
    df.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(LeaderboardError) as e:
        publish([tmp_path / "bad.csv"], out=tmp_path / "board")
    text = str(e.value)
    assert "2 of 2 row(s) are not admissible" in text
    assert "line 2 (" in text and "provenance missing: source" in text and "line 3 (" in text and "norm '../x'" in text


def test_leaderboard_command(results, tmp_path, capsys):
    assert main(["leaderboard", str(results), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "mnist5k-linf.csv" in " ".join(out.split()) and "adversarial accuracy" in out
    assert main(["leaderboard", str(tmp_path / "nothing-here.csv"), "--out", str(tmp_path)]) == 2


def test_results_from_before_the_label_fraction_option_merge_as_all_labels(results, tmp_path):
    old = pd.read_csv(results / "results.csv").drop(columns=["label_fraction", "n_probe_labels"])
    old.to_csv(tmp_path / "old.csv", index=False)
    publish([tmp_path / "old.csv"], out=tmp_path / "board")
    publish([results], out=tmp_path / "board")  # the same cells again, now with the column: no duplicates
    board = pd.read_csv(tmp_path / "board" / "mnist5k-linf.csv")
    assert len(board) == 2 and (board["label_fraction"] == 1.0).all()


def test_markdown_keeps_label_fractions_apart(results, tmp_path):
    df = pd.read_csv(results / "results.csv")
    df.assign(label_fraction=0.5).to_csv(tmp_path / "half.csv", index=False)
    publish([results, tmp_path / "half.csv"], out=tmp_path / "board")
    md = (tmp_path / "board" / "mnist5k-linf.md").read_text()
    assert md.count("| vae |") == 2 and "| 0.5 |" in md and "| 1 |" in md


def test_a_hand_made_frame_with_only_the_essential_columns_plots(tmp_path):
    df = pd.DataFrame({"dataset": "mnist5k", "task": "digit", "suite": "native", "attack": "pgd", "learner": "vae",
                       "run": "r", "radius": [0.0, 0.1], "adversarial_accuracy": [0.9, 0.2]})
    assert plot_robustness(df, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    (key, rows), = robustness_panels(df)
    assert key == ("mnist5k", "digit", "", "native", "pgd", 0) and len(rows) == 2


def test_a_row_that_only_failed_convergence_is_published_with_its_warning(results, tmp_path):
    df = pd.read_csv(results / "results.csv")
    late = df["radius"] > 0  # its evidence says so: a fifth of the points were first broken late
    df = df.assign(late_share=df["late_share"].mask(late, 0.2), check_converged=df["check_converged"].mask(late, False),
                   checks_passed=df["checks_passed"].mask(late, False),
                   warnings=df["warnings"].astype(object).mask(late, "not converged: ..."))
    df.to_csv(tmp_path / "late.csv", index=False)
    publish([tmp_path / "late.csv"], out=tmp_path / "board")
    board = pd.read_csv(tmp_path / "board" / "mnist5k-linf.csv")
    assert not board[board["radius"] > 0]["checks_passed"].any()
    assert board[board["radius"] > 0]["warnings"].str.startswith("not converged").all()


def test_replace_drops_the_old_rows_of_a_republished_run(results, tmp_path):
    publish([results], out=tmp_path)
    other = pd.read_csv(results / "results.csv")
    other["encoder_sha256"] = "f" * 64  # the same run re-trained on another machine
    other.to_csv(tmp_path / "other.csv", index=False)
    publish([tmp_path / "other.csv"], out=tmp_path, replace=True)
    board = pd.read_csv(tmp_path / "mnist5k-linf.csv")
    assert len(board) == len(other) and (board["encoder_sha256"] == "f" * 64).all()
