"""Inputs validated before any work: every config value's type and range, the output folder, colliding
labels, the train command's --set; and the plan (`robrep bench --dry-run`) of a half-finished folder."""
import pytest

from robrep.cli import main
from robrep.harness import BenchConfig, ConfigError, bench

SMALL = dict(learners=("vae",), epochs=1, radii=(0.0, 0.1), steps=3, restarts=1, n_examples=40)


@pytest.mark.parametrize("toml,message", [
    ('steps = "10"', "steps must be an integer, got the string '10'"),
    ("n_examples = 200.5", "n_examples must be an integer or none, got 200.5"),
    ('radii = "a tenth"', "expected a number such as 0.1 or a fraction such as 8/255, got 'a tenth'"),
    ("radii = [true]", "radii[0] must be a number"),
    ("radii = [0.0, -0.1]", "radii must be numbers >= 0"),
    ("radii = [0.1, 0.1]", "radii must be distinct"),
    ("radii = [2.0]", "at most 1 for the L-inf threat model"),
    ('norm = "l3"', "norm must be linf or l2 (also spelt Linf, L2, inf, 2), got 'l3'"),
    ("label_fraction = 0", "label_fraction must be in (0, 1]"),
    ('device = "gpu"', "device must be cpu, cuda or cuda:N"),
    ("retrain = 1", "retrain must be true or false"),
    ('learner_config = { vae = 3 }', "learner_config must be a table of tables"),
])
def test_toml_values_are_checked_before_any_work(tmp_path, capsys, toml, message):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(toml + "\n")
    assert main(["bench", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    printed = " ".join(capsys.readouterr().out.split())
    assert str(cfg) in printed and message in printed
    assert not (tmp_path / "out").exists()  # nothing was made


def test_values_are_kept_in_the_types_they_mean():
    cfg = BenchConfig(learners="vae", radii=[0.2, 0, 0.1], steps=10.0, label_fraction=1)
    assert cfg.learners == ("vae",) and cfg.radii == (0.0, 0.1, 0.2) and cfg.steps == 10
    assert isinstance(cfg.label_fraction, float)
    assert BenchConfig(norm="l2", radii=(0, 0.5, 2)).radii == (0.0, 0.5, 2.0)  # L2 radii may exceed 1


def test_a_wrong_out_folder_is_a_one_line_error_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    for out, message in ((tmp_path / "afile", "is a file, not a folder"),
                         (tmp_path / "afile" / "below", "is a file, not a folder")):
        assert main(["bench", "--learner", "vae", "--out", str(out)]) == 2
        assert message in " ".join(capsys.readouterr().out.split())


def test_colliding_labels_are_refused_before_anything_is_trained(tmp_path):
    with pytest.raises(ConfigError, match="'se-random:a' and 'se-random:b' are the same run"):
        bench(out=str(tmp_path), **{**SMALL, "learners": ("se-random:a", "se-random:b")},
              learner_config={"se-random:a": {"gamma": 10}, "se-random:b": {"gamma": 10.0}})
    with pytest.raises(ConfigError, match="'vae' and 'vae' are the same run"):
        bench(out=str(tmp_path), **{**SMALL, "learners": ("vae", "vae")})
    assert not (tmp_path / "results.csv").exists()


def test_two_checkpoint_folders_of_one_name_are_refused_before_any_work(tmp_path, mnist5k):
    """Their probes and image grids would be one file: the second fit would replace the probe the first's cells
    (and the independent check) need."""
    import robrep

    for seed in (0, 1):
        robrep.train("vae", mnist5k, seed=seed, max_steps=2, out=tmp_path / f"seed{seed}" / "vae")
    with pytest.raises(ConfigError, match=r"are the same run 'vae' on mnist5k: checkpoint folders of one name"):
        bench(out=str(tmp_path / "out"), **{**SMALL, "learners": (str(tmp_path / "seed0" / "vae"),
                                                                   str(tmp_path / "seed1" / "vae"))})
    assert not (tmp_path / "out" / "results.csv").exists()


def test_train_set_errors_are_messages_not_tracebacks(capsys):
    with pytest.raises(SystemExit) as exit_:  # argparse refuses it with a usage line
        main(["train", "--set", "lr"])
    assert exit_.value.code == 2 and "--set expects key=value, got 'lr'" in capsys.readouterr().err
    assert main(["train", "--learner", "vae", "--set", "epochs=abc"]) == 2
    assert "epochs must be an integer, got the string 'abc'" in " ".join(capsys.readouterr().out.split())


def test_dry_run_on_a_half_finished_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROBREP_CACHE", str(tmp_path / "cache"))  # se-random is not cached
    out = str(tmp_path / "half")
    bench(out=out, **SMALL)  # the native cell of vae is finished
    argv = ["bench", "--learner", "vae", "--learner", "se-random", "--epochs", "1", "--radii", "0,0.1", "--steps",
            "3", "--restarts", "1", "--n-examples", "40", "--suite", "native", "--suite", "foolbox", "--out", out,
            "--dry-run"]
    # every attack on every point: the native cell is the one the native-only run finished
    assert main([*argv, "--worst-case", "per-attack"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "1 cell(s) done, 9 to run, 1 learner(s) to train" in printed
    # a cascade's stages attack what the stages before them left: none of them is that cell
    assert main(argv) == 0
    assert "0 cell(s) done, 10 to run, 1 learner(s) to train" in " ".join(capsys.readouterr().out.split())
    from robrep.harness.plan import plan

    cells = plan(BenchConfig(learners=("vae", "se-random"), epochs=1, radii=(0, 0.1), steps=3, restarts=1,
                             n_examples=40, suites=("native", "foolbox"), worst_case="per-attack", out=out))
    status = cells.groupby("label")["learner_status"].first().to_dict()
    assert status == {"vae": "cached checkpoint", "se-random": "train"}
    assert cells.set_index(["label", "suite"]).loc[("vae", "native"), "status"] == "done"
    import pandas as pd

    assert len(pd.read_csv(tmp_path / "half" / "results.csv")) == 2  # the plan ran nothing


def test_a_named_budget_sets_steps_and_restarts_and_refuses_a_conflict(capsys):
    assert (BenchConfig(budget="quick").steps, BenchConfig(budget="quick").restarts) == (10, 1)
    assert (BenchConfig(budget="paper").steps, BenchConfig(budget="paper").restarts) == (100, 10)
    with pytest.raises(ConfigError, match="budget 'quick' means steps x restarts = 10 x 1, but .* 50 x 10"):
        BenchConfig(budget="quick", steps=50)
    with pytest.raises(ConfigError, match="budget must be one of quick, standard, paper"):
        BenchConfig(budget="huge")
    assert main(["bench", "--budget", "quick", "--steps", "5", "--dry-run"]) == 2
    assert "give it or --steps/--restarts, not both" in " ".join(capsys.readouterr().out.split())


def test_threads_are_chosen_deliberately_and_a_busy_machine_is_warned_about(monkeypatch, caplog):
    import torch

    from robrep import threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert threads.default_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(threads.cores()))  # as many ranks as cores: one thread each
        assert threads.default_threads() == 1
        monkeypatch.delenv("LOCAL_WORLD_SIZE")
        assert threads.default_threads() == min(threads.cores(), torch.get_num_threads())
        monkeypatch.setattr(threads.os, "getloadavg", lambda: (threads.cores() + 1.0, 0.0, 0.0))
        with caplog.at_level("WARNING", logger="robrep.threads"):
            assert threads.use_threads(2) == 2 == torch.get_num_threads()
        assert "threads will compete with other processes" in caplog.text
        caplog.clear()
        with caplog.at_level("WARNING", logger="robrep.threads"):
            threads.use_threads(1)  # one thread competes with no one's threads of its own
        assert "compete" not in caplog.text
        with pytest.raises(ConfigError, match="threads must be an integer >= 1"):
            BenchConfig(threads=0)
    finally:
        torch.set_num_threads(before)
