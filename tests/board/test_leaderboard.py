"""Publishing results CSVs into the leaderboard."""
import pandas as pd
import pytest

from robrep.cli import main
from robrep.harness import bench
from robrep.board.leaderboard import LeaderboardError, publish
from robrep.board.plots import line_labels, plot_robustness, robustness_panels


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
    board = pd.read_csv(tmp_path / "experiments" / "mnist5k-linf.csv")
    assert len(board) == 2 and board["adversarial_accuracy"].dtype == float
    assert "checkpoint" not in board.columns  # no machine-local paths in published files
    md = (tmp_path / "experiments" / "mnist5k-linf.md").read_text()
    assert "## digit" in md and "| vae |" in md
    assert (tmp_path / "experiments" / "mnist5k-linf.png").read_bytes()[:4] == b"\x89PNG"


def test_merging_the_same_results_twice_changes_nothing(results, tmp_path):
    publish([results], out=tmp_path)
    first = (tmp_path / "experiments" / "mnist5k-linf.csv").read_bytes()
    publish([results], out=tmp_path)
    assert (tmp_path / "experiments" / "mnist5k-linf.csv").read_bytes() == first


def test_every_encoder_of_a_protocol_shares_one_panel_and_markdown_keeps_them_apart(results, tmp_path):
    mlp = pd.read_csv(results / "results.csv")
    conv = mlp.assign(arch="conv", run=mlp["run"].str.replace("-mlp-", "-conv-"), encoder_sha256="f" * 64)
    board = pd.concat([mlp, conv], ignore_index=True)
    (key, rows), = robustness_panels(board)  # one panel per data set, task, threat model and protocol
    assert key == ("mnist5k", "digit", "linf", 50, 0, 1.0, "standard") and sorted(rows["arch"]) == ["conv", "mlp"]
    board.to_csv(tmp_path / "both.csv", index=False)
    publish([tmp_path / "both.csv"], out=tmp_path / "board")
    md = (tmp_path / "board" / "experiments" / "mnist5k-linf.md").read_text()
    assert "| vae | conv |" in md and "| vae | mlp |" in md


def test_panels_split_by_protocol_and_lines_say_what_they_show(results):
    rows = pd.read_csv(results / "results.csv")
    se = rows.assign(learner="se-adversarial", label="se-adversarial", run="se-a", encoder_sha256="a" * 64)
    twin = se.assign(run="se-c", encoder_sha256="c" * 64)  # same label and architecture: named by run
    few_labels = rows.assign(label_fraction=0.01)
    more_points = rows.assign(n_examples=100)
    panels = dict(robustness_panels(pd.concat([rows, se, twin, few_labels, more_points], ignore_index=True)))
    assert sorted((k[3], k[5]) for k in panels) == [(50, 0.01), (50, 1.0), (100, 1.0)]
    main_panel = panels[("mnist5k", "digit", "linf", 50, 0, 1.0, "standard")]
    labels = line_labels(main_panel)
    assert sorted(labels) == ["se-adversarial (mlp) [single attack: native/pgd: upper bound] se-a",
                              "se-adversarial (mlp) [single attack: native/pgd: upper bound] se-c",
                              "vae (mlp) [single attack: native/pgd: upper bound]"]


def test_an_encoder_has_one_colour_in_every_plot():
    from robrep.board.plots import encoder_colour

    builtin = [encoder_colour(n) for n in ("vae", "beta-vae", "se-random", "se-adversarial", "se-fgsm", "se-warm")]
    assert len(set(builtin)) == 6
    assert encoder_colour("my-plugin:variant") == encoder_colour("my-plugin:variant")  # by name, not by order


def test_rows_of_a_learner_without_an_architecture_are_published_not_dropped(results, tmp_path):
    rows = pd.read_csv(results / "results.csv")
    plugin = rows.assign(arch=None, learner="pca", label="pca", run=rows["run"].str.replace("vae", "pca"),
                         encoder_sha256="e" * 64)
    pd.concat([rows, plugin], ignore_index=True).to_csv(tmp_path / "both.csv", index=False)
    publish([tmp_path / "both.csv"], out=tmp_path / "board")
    md = (tmp_path / "board" / "experiments" / "mnist5k-linf.md").read_text()
    assert "| pca |  |" in md and "| vae | mlp |" in md
    assert len(pd.read_csv(tmp_path / "board" / "experiments" / "mnist5k-linf.csv")) == 2 * len(rows)


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
    board = pd.read_csv(tmp_path / "board" / "experiments" / "mnist5k-linf.csv")
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
    # the cases admission refuses: adversarial above nominal with every flag True; empty provenance; a path for a name
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
    assert main(["leaderboard", str(results), "--out", str(tmp_path)]) == 0  # a quick run: an experiment
    out = " ".join(capsys.readouterr().out.split())
    assert "experiments/mnist5k-linf.csv" in out and "no entry stands on a standard board" in out
    assert main(["leaderboard", "--out", str(tmp_path / "experiments")]) == 0  # shown as a board of its own
    assert "ranked by robust accuracy at radius 0.1" in capsys.readouterr().out
    assert main(["leaderboard", "--detail", "--out", str(tmp_path / "experiments")]) == 0
    assert "adversarial accuracy: mnist5k / digit" in capsys.readouterr().out  # every attack's rows
    (tmp_path / "experiments" / "mnist5k-linf.md").write_text("stale")
    assert main(["leaderboard", "--render", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "experiments" / "mnist5k-linf.md").read_text().startswith("# Leaderboard: mnist5k")
    assert main(["leaderboard", str(tmp_path / "nothing-here.csv"), "--out", str(tmp_path)]) == 2


def test_results_from_before_the_label_fraction_option_merge_as_all_labels(results, tmp_path):
    old = pd.read_csv(results / "results.csv").drop(columns=["label_fraction", "n_probe_labels"])
    old.to_csv(tmp_path / "old.csv", index=False)
    publish([tmp_path / "old.csv"], out=tmp_path / "board")
    publish([results], out=tmp_path / "board")  # the same cells again, now with the column: no duplicates
    board = pd.read_csv(tmp_path / "board" / "experiments" / "mnist5k-linf.csv")
    assert len(board) == 2 and (board["label_fraction"] == 1.0).all()


def test_markdown_keeps_label_fractions_apart(results, tmp_path):
    df = pd.read_csv(results / "results.csv")
    df.assign(label_fraction=0.5).to_csv(tmp_path / "half.csv", index=False)
    publish([results, tmp_path / "half.csv"], out=tmp_path / "board")
    md = (tmp_path / "board" / "experiments" / "mnist5k-linf.md").read_text()
    headline, detail = md.split("# Per-attack detail")
    assert headline.count("| vae |") == 2 and detail.count("| vae |") == 2  # each label fraction its own row
    assert "| 0.5 |" in detail and "| 1 |" in detail


def test_a_hand_made_frame_with_only_the_essential_columns_plots(tmp_path):
    df = pd.DataFrame({"dataset": "mnist5k", "task": "digit", "suite": "native", "attack": "pgd", "learner": "vae",
                       "run": "r", "radius": [0.0, 0.1], "adversarial_accuracy": [0.9, 0.2]})
    assert plot_robustness(df, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    (key, rows), = robustness_panels(df)
    assert key == ("mnist5k", "digit", "linf", 0, 0, 1.0, "standard") and len(rows) == 1 and rows["r=0.1"].iloc[0] == 0.2


def test_a_row_that_only_failed_convergence_is_published_with_its_warning(results, tmp_path):
    df = pd.read_csv(results / "results.csv")
    late = df["radius"] > 0  # its evidence says so: a fifth of the points were first broken late
    df = df.assign(late_share=df["late_share"].mask(late, 0.2), check_converged=df["check_converged"].mask(late, False),
                   checks_passed=df["checks_passed"].mask(late, False),
                   warnings=df["warnings"].astype(object).mask(late, "not converged: ..."))
    df.to_csv(tmp_path / "late.csv", index=False)
    publish([tmp_path / "late.csv"], out=tmp_path / "board")
    board = pd.read_csv(tmp_path / "board" / "experiments" / "mnist5k-linf.csv")
    assert not board[board["radius"] > 0]["checks_passed"].any()
    assert board[board["radius"] > 0]["warnings"].str.startswith("not converged").all()


def test_replace_drops_the_old_rows_of_a_republished_run(results, tmp_path):
    publish([results], out=tmp_path)
    other = pd.read_csv(results / "results.csv")
    other["encoder_sha256"] = "f" * 64  # the same run re-trained on another machine
    other.to_csv(tmp_path / "other.csv", index=False)
    publish([tmp_path / "other.csv"], out=tmp_path, replace=True)
    board = pd.read_csv(tmp_path / "experiments" / "mnist5k-linf.csv")
    assert len(board) == len(other) and (board["encoder_sha256"] == "f" * 64).all()
