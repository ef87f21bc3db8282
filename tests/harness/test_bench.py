"""End to end: robrep bench trains (or reuses) learners, probes, attacks, checks and writes results."""
from fixtures import REPO, sound
import importlib
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import robrep
from robrep.harness import BenchConfig, bench
from robrep.io import sha256_bytes
from robrep.cli import main
from robrep.rows import COLUMNS

SMALL = dict(learners=("vae", "se-random"), epochs=1, radii=(0.0, 0.1, 0.2), steps=5, restarts=2, n_examples=100)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # the module-scoped run needs the same isolated cache as the function-scoped tests
    mp = pytest.MonkeyPatch()
    mp.setenv("ROBREP_CACHE", str(tmp_path_factory.getbasetemp() / "robrep-cache"))
    df = bench(BenchConfig(out=str(out), **SMALL))
    mp.undo()
    return out, df


def test_rows_carry_everything_needed_to_trust_them(first_run):
    out, df = first_run
    assert set(COLUMNS) <= set(df.columns)
    assert len(df) == 2 * 3  # two learners x three radii on the one task
    assert df["adversarial_accuracy"].between(0, 1).all() and df["nominal_accuracy"].between(0, 1).all()
    assert sound(df)
    assert set(df["learner"]) == {"vae", "se-random"} and (df["n_examples"] == 100).all()
    assert (df["steps"] == 5).all() and (df["restarts"] == 2).all() and (df["n_classes"] == 10).all()
    # each encoder's training time, as its checkpoint records it
    for run, g in df.groupby("run"):
        meta = json.loads((Path(g["checkpoint"].iloc[0]) / "config.json").read_text())
        assert (g["train_seconds"] == meta["train_seconds"]).all() and meta["train_seconds"] > 0, run
        # and what trained it (this process: the same machine and threads as the attacks')
        assert (meta["machine"], meta["threads"]) == (g["machine"].iloc[0], g["threads"].iloc[0]), run
    for _, g in df.groupby("run"):
        g = g.sort_values("radius")
        assert g["adversarial_accuracy"].iloc[0] == g["nominal_accuracy"].iloc[0]
        assert g["adversarial_accuracy"].is_monotonic_decreasing
    # the machine: CPU model, cores and the vector instructions torch's kernels use (two machines of one model
    # name that differ there train other encoders from the same seed)
    assert (df["machine"].str.contains(f" x{os.cpu_count()} {torch.backends.cpu.get_cpu_capability()}; ",
                                       regex=False)).all(), df["machine"].unique()
    on_disk = pd.read_csv(out / "results.csv")
    assert len(on_disk) == len(df) and on_disk["adversarial_accuracy"].dtype == float
    assert (out / "robustness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probes_are_saved_with_their_hash(first_run):
    out, df = first_run
    for _, row in df.drop_duplicates("run").iterrows():
        path = out / "probes" / row["run"] / f"{row['dataset']}-{row['task']}.safetensors"
        assert sha256_bytes(path.read_bytes()) == row["probe_sha256"]
        assert load_file(path)["weight"].shape == (10, 32)


def test_second_run_reuses_checkpoints_and_finished_cells(first_run, monkeypatch):
    out, df = first_run

    def no_training(*a, **k):
        raise AssertionError("a cached checkpoint should have been reused")

    monkeypatch.setattr(importlib.import_module("robrep.train"), "train", no_training)
    again = bench(BenchConfig(out=str(out), **SMALL))
    pd.testing.assert_frame_equal(again.reset_index(drop=True), df.reset_index(drop=True))


def test_a_killed_run_resumes_without_duplicates(first_run, tmp_path):
    out, df = first_run
    partial = df[df["learner"] == "vae"]
    (tmp_path / "results.csv").write_text(partial.to_csv(index=False))
    resumed = bench(BenchConfig(out=str(tmp_path), **SMALL))
    assert len(resumed) == len(df)
    assert not resumed.duplicated(["run", "task", "radius"]).any()
    # same seed, same machine: the recomputed cell has the same numbers
    a = df.sort_values(["run", "radius"])["adversarial_accuracy"].tolist()
    b = resumed.sort_values(["run", "radius"])["adversarial_accuracy"].tolist()
    assert a == b


def test_a_checkpoint_folder_can_be_benchmarked(mnist5k, tmp_path):
    robrep.train("beta-vae", mnist5k, out=tmp_path / "mine", max_steps=5)
    df = bench(out=str(tmp_path / "b"), learners=(str(tmp_path / "mine"),), radii=(0.0, 0.1), steps=3, restarts=1,
               n_examples=50)
    assert set(df["learner"]) == {"beta-vae"} and set(df["run"]) == {"mine"}


@pytest.mark.slow
def test_colormnist_probes_both_tasks(tmp_path):
    df = bench(out=str(tmp_path), learners=("vae",), datasets=("colormnist5k",), epochs=1, radii=(0.0, 0.1),
               steps=3, restarts=1, n_examples=70)
    assert set(df["task"]) == {"digit", "color"}
    assert dict(zip(df["task"], df["n_classes"])) == {"digit": 10, "color": 7}
    assert sound(df)


def test_toml_config_and_cli(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(
        'learners = ["vae"]\nradii = [0.0, 0.1]\nsteps = 3\nrestarts = 1\nn_examples = 60\nepochs = 1\n'
        f'out = "{tmp_path / "out"}"\n[learner_config.vae]\nlatent_dim = 8\n'
    )
    assert main(["bench", "--config", str(cfg), "--seed", "1"]) == 0
    df = pd.read_csv(tmp_path / "out" / "results.csv")
    assert (df["seed"] == 1).all() and json.loads(df["learner_config"][0])["latent_dim"] == 8
    printed = " ".join(capsys.readouterr().out.split())
    failed = int((~df["checks_passed"].astype(bool)).sum())  # the summary line says what the rows say
    summary = f"all {len(df)} rows passed the checks" if not failed else f"{failed} row(s) failed a check"
    assert "adversarial accuracy" in printed and summary in printed
    (tmp_path / "bad.toml").write_text("learnerz = ['vae']\n")
    assert main(["bench", "--config", str(tmp_path / "bad.toml")]) == 2
    assert "unknown key(s) learnerz" in " ".join(capsys.readouterr().out.split())


def test_bad_task_names_the_tasks(tmp_path):
    with pytest.raises(robrep.DatasetError, match="its tasks are: digit"):
        bench(out=str(tmp_path), learners=("vae",), tasks=("color",))


def test_the_default_experiment_file_is_the_default_config():
    from pathlib import Path

    toml = REPO / "benchmarks" / "default.toml"
    assert BenchConfig.from_toml(toml) == BenchConfig()
    assert robrep.bench is bench and robrep.BenchConfig is BenchConfig


def test_label_fraction_and_image_grid(tmp_path):
    df = bench(out=str(tmp_path), learners=("vae",), epochs=1, radii=(0.0, 0.1), steps=3, restarts=1, n_examples=40,
               label_fraction=0.05, images=0.1)
    assert (df["label_fraction"] == 0.05).all() and (df["n_probe_labels"] == 200).all()  # 5% of 400 per class
    grid = tmp_path / "images" / f"{df['run'][0]}-mnist5k-digit-r0.1.png"
    assert grid.read_bytes()[:4] == b"\x89PNG"
    full = bench(out=str(tmp_path), learners=("vae",), epochs=1, radii=(0.0, 0.1), steps=3, restarts=1, n_examples=40)
    assert (full["label_fraction"] == 1.0).all()  # bench returns its own protocol's rows ...
    everything = pd.read_csv(tmp_path / "results.csv")
    assert sorted(everything["label_fraction"].unique()) == [0.05, 1.0]  # ... a different probe keeps its own
    with pytest.raises(ValueError, match="label_fraction"):
        BenchConfig(label_fraction=0)


@pytest.mark.parametrize("norm,eps", [("linf", 0.3), ("l2", 1.5)])
def test_the_image_grid_attacks_in_the_runs_norm(norm, eps, tmp_path, monkeypatch):
    from robrep.harness import execute

    drawn = []
    monkeypatch.setattr(execute, "image_grid", lambda model, x, x_adv, y, radius, path, **kw: drawn.append(
        (x, x_adv, kw["norm"], kw["title"])))
    bench(out=str(tmp_path), learners=("vae",), epochs=1, radii=(0.0, eps), steps=5, restarts=1, n_examples=40,
          norm=norm, images=eps)
    (x, x_adv, drawn_norm, title), = drawn
    delta = (x_adv - x).flatten(1)
    size = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(1)
    assert drawn_norm == norm and (size <= eps + 1e-4).all() and size.max() > 0.5 * eps
    if norm == "l2":  # an L-inf attack of this radius would move every pixel up to 1.5: an L2 norm of about 20
        assert "L2 PGD" in title


def test_labelled_variants_of_one_learner(tmp_path):
    df = bench(out=str(tmp_path), learners=("se-random:weak", "se-random:strong"), epochs=1, radii=(0.0, 0.1), steps=3,
               restarts=1, n_examples=40, learner_config={"se-random:weak": {"gamma": 1.0},
                                                          "se-random:strong": {"gamma": 100.0}})
    assert set(df["label"]) == {"se-random:weak", "se-random:strong"} and set(df["learner"]) == {"se-random"}
    gammas = {row["label"]: json.loads(row["learner_config"])["gamma"] for _, row in df.iterrows()}
    assert gammas == {"se-random:weak": 1.0, "se-random:strong": 100.0}
    assert df["run"].nunique() == 2


def test_resuming_with_more_radii_computes_the_missing_ones(tmp_path):
    kw = dict(out=str(tmp_path), learners=("vae",), epochs=1, steps=3, restarts=1, n_examples=40,
              suites=("native", "foolbox"))
    bench(radii=(0.0, 0.1), **kw)
    df = bench(radii=(0.0, 0.1, 0.2), **kw)
    for attack, g in df.groupby("attack"):
        assert sorted(g["radius"]) == [0.0, 0.1, 0.2], attack
    assert not df.duplicated(["suite", "attack", "radius"]).any()


def test_label_fraction_one_is_one_cell_whatever_its_type():
    assert BenchConfig(label_fraction=1).label_fraction == 1.0 and isinstance(BenchConfig(label_fraction=1).label_fraction, float)


def test_bench_reuses_what_robrep_train_made(mnist5k, monkeypatch, tmp_path):
    robrep.train("vae", mnist5k, epochs=1)  # saved under the cache, named by its full config
    monkeypatch.setattr(importlib.import_module("robrep.train"), "train",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("retrained")))
    df = bench(out=str(tmp_path), learners=("vae",), epochs=1, radii=(0.0,), steps=1, restarts=1, n_examples=10)
    assert len(df) == 1


def test_adding_a_radius_to_a_finished_run_leaves_the_other_radii(tmp_path):
    kw = dict(out=str(tmp_path), learners=("vae",), epochs=1, steps=10, restarts=2, n_examples=80)
    first = bench(radii=(0.0, 0.05, 0.1), **kw)
    more = bench(radii=(0.0, 0.05, 0.1, 0.2), **kw)
    cols = ["radius", "adversarial_accuracy", "noise_accuracy", "n_attacked"]
    assert len(more) == 4
    pd.testing.assert_frame_equal(first[cols].reset_index(drop=True), more[more["radius"] < 0.2][cols].reset_index(drop=True))


def test_stacked_tasks_write_the_rows_and_masks_of_one_task_at_a_time(tmp_path, monkeypatch):
    """``stack_tasks``: robrep's PGD attacks colormnist's two tasks in one pass, inside a cascade with foolbox's
    attacks before and after it; every row and mask is the one the tasks get one at a time."""
    from robrep.rows.masks import load_masks, masks_path

    small = dict(learners=("vae",), datasets=("colormnist5k",), epochs=1, radii=(0.0, 0.05, 0.1), steps=5,
                 restarts=2, n_examples=80, suites=("native", "foolbox"))
    from robrep.harness import execute

    passes = []  # the tasks of each stacked pass

    def counted(attack, cells, *args, **kwargs):
        passes.append(sorted(str(c.model.probe.out_features) for c in cells))
        return run_stacked(attack, cells, *args, **kwargs)

    run_stacked = execute.run_stacked
    monkeypatch.setattr(execute, "run_stacked", counted)
    alone = bench(out=str(tmp_path / "alone"), **small)
    assert passes == []
    stacked = bench(out=str(tmp_path / "stacked"), stack_tasks=True, **small)
    assert passes == [["10", "7"]]  # robrep's PGD on both tasks (10 digits, 7 colours), once
    assert set(alone["task"]) == {"digit", "color"} and set(alone["suite"]) == {"native", "foolbox", "worst-case"}
    varies = {"timestamp", "wall_seconds"}
    key = ["task", "suite", "attack", "radius"]
    a, b = (df.sort_values(key).reset_index(drop=True).drop(columns=list(varies)) for df in (alone, stacked))
    pd.testing.assert_frame_equal(a, b)
    mid = alone[alone["radius"] == 0.05]  # the attacks did something, and not everything
    assert (mid["adversarial_accuracy"] > 0).all() and (mid["adversarial_accuracy"] < mid["nominal_accuracy"]).all()
    masks = sorted((tmp_path / "alone").glob("examples/**/*.safetensors"))
    assert len(masks) >= 2 * 3
    for path in masks:
        other = load_masks(tmp_path / "stacked" / path.relative_to(tmp_path / "alone"))
        assert all(torch.equal(v, other[k]) for k, v in load_masks(path).items()), path
    # killed with the tasks at different stages (colour from the stage before robrep's PGD on, digit from robrep's
    # PGD on): the resumed run runs the colour's stage alone, then both tasks' PGD stacked, and the same rows again
    place = {(r["task"], r["suite"], r["attack"]): len(json.loads(r["attack_config"])["cascade_after"]["attacks"])
             for _, r in stacked[stacked["suite"] != "worst-case"].iterrows()}
    pgd = place[("color", "native", "pgd")]
    lost = 0
    for (task, suite, attack), k in place.items():
        if k >= pgd - (task == "color"):
            row = stacked[(stacked["task"] == task) & (stacked["suite"] == suite) & (stacked["attack"] == attack)]
            masks_path(tmp_path / "stacked", row.iloc[0].to_dict(), small["radii"]).unlink()
            lost += 1
    assert pgd > 0 and lost >= 3
    passes.clear()
    resumed = bench(out=str(tmp_path / "stacked"), stack_tasks=True, **small)
    assert passes == [["10", "7"]]
    pd.testing.assert_frame_equal(a, resumed.sort_values(key).reset_index(drop=True).drop(columns=list(varies)))
