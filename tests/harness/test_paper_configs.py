"""The paper's experiments as configs: each one parses and names things that exist; Table 1 runs on a
miniature CelebA generated in the real layout."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fixtures import REPO, make_celeba, sound
from robrep.attacks import SUITES
from robrep.data.celeba import DEFAULT_TASKS
from robrep.encoders import resolve
from robrep.harness import BenchConfig, bench
from robrep.registry import DATASETS

PAPER = REPO / "benchmarks" / "paper"
BEYOND = REPO / "benchmarks" / "beyond"


@pytest.mark.parametrize("path", sorted([*PAPER.glob("*.toml"), *BEYOND.glob("*.toml")]), ids=lambda p: p.stem)
def test_paper_config_is_valid(path):
    cfg = BenchConfig.from_toml(path)
    # each learner is a robrep learner whose learner_config names only fields it has (resolve raises otherwise)
    assert all(resolve(spec, cfg.learner_config).kind == "learner" for spec in cfg.learners)
    assert all(name in DATASETS for name in cfg.datasets) and all(name in SUITES for name in cfg.suites)
    for spec in cfg.learner_config:
        assert spec in cfg.learners, f"{path.name}: learner_config for {spec!r}, which is not benchmarked"
    # every SE pins its selection (the paper's figures: L = 20 or 50 from a random start), so a change of the
    # default selection (now warm-started) never changes what a published config trains
    for spec in cfg.learners:
        if spec.split(":")[0] == "se-adversarial":
            options = cfg.learner_config.get(spec, {})
            allowed = (20, 50) if path.parent == PAPER else (1, 2, 20, 50)
            assert options.get("selection_steps") in allowed, f"{path.name}: {spec!r} does not pin selection_steps"
            assert options.get("selection_start") in (("random",) if path.parent == PAPER else ("random", "warm")), \
                f"{path.name}: {spec!r} does not pin selection_start"
            assert {"gamma", "selection_eps"} <= set(options), f"{path.name}: {spec!r} does not pin gamma and radius"


def test_every_published_run_is_the_run_its_config_plans_today():
    """Run ids hash the learner config; a field added later (selection_start) must rename no published run."""
    import csv

    from robrep.encoders.resolve import planned_run

    planned, absent = set(), set()
    standard = sorted((PAPER.parent / "standard").glob("*.toml"))  # the standard boards' reference runs
    plugins = sorted((PAPER.parent / "standard" / "plugins").glob("*.toml"))  # the example plugins' baselines
    for path in [*PAPER.glob("*.toml"), *BEYOND.glob("*.toml"), *standard, *plugins, PAPER.parent / "default.toml"]:
        cfg = BenchConfig.from_toml(path)
        for name in cfg.datasets:
            shape = {"mnist5k": (1, 28, 28), "colormnist5k": (3, 28, 28), "celeba": (3, 64, 64)}[name]
            for spec in cfg.learners:
                if path in plugins:  # an example plugin's run: its id is the plugin's (installed or not)
                    assert spec in ("pca", "random-features"), f"{path.name}: {spec!r} is no example plugin"
                    absent.add(spec)
                    continue
                src = resolve(spec, cfg.learner_config)
                planned.add(planned_run(src, type("DS", (), {"name": name, "shape": shape})(), seed=cfg.seed,
                                        arch=cfg.arch, epochs=cfg.epochs)[2].name)
    published = set()
    for table in (PAPER.parent.parent / "leaderboard").glob("*.csv"):
        published |= {row["run"] for row in csv.DictReader(table.open()) if row["learner"] not in absent}
    assert published and published <= planned, sorted(published - planned)


@pytest.mark.slow
def test_table1_runs_on_a_miniature_celeba(tmp_path):
    root = make_celeba(tmp_path / "celeba", n=24)
    cfg = BenchConfig.from_toml(PAPER / "table1_celeba.toml", data_root=str(root), out=str(tmp_path / "out"),
                                suites=("native",), steps=2, restarts=1, n_examples=None,
                                learner_config={"vae": {"epochs": 1, "likelihood": "gaussian"},
                                                "se-adversarial": {"epochs": 1, "likelihood": "gaussian",
                                                                   "selection_steps": 2}})
    df = bench(cfg)
    assert set(df["task"]) == set(DEFAULT_TASKS) and len(DEFAULT_TASKS) == 17
    assert set(df["learner"]) == {"vae", "se-adversarial"} and (df["n_classes"] == 2).all()
    assert (df["arch"] == "conv").all() and set(df["radius"]) == {0.0, 0.1}
    assert sound(df) and (df["n_examples"] == 6).all()
    # shown as the paper's Table 1: one row per task, nominal and adversarial accuracy per learner
    from robrep.board.leaderboard import render_markdown
    from robrep.board.tables import task_table

    tt = task_table(df)
    assert list(tt.index) == sorted(DEFAULT_TASKS) and tt.attrs["radius"] == 0.1
    assert list(tt.columns) == [(lab, w) for lab in ("se-adversarial", "vae") for w in ("nominal", "adversarial")]
    md = render_markdown(df.astype(object).fillna(""), "celeba")
    assert "| task | se-adversarial nominal | se-adversarial adversarial | vae nominal | vae adversarial |" in md
    assert sum(line.startswith(f"| {t} |") for t in DEFAULT_TASKS for line in md.splitlines()) == 17
    assert "## Bald" not in md  # not one table per task
    assert (tmp_path / "out" / "robustness.png").stat().st_size > 10_000


@pytest.mark.slow
def test_compare_published_tells_a_reproduced_run_from_a_changed_one(tmp_path):
    board = pd.read_csv(PAPER.parent.parent / "leaderboard" / "mnist5k-linf.csv")
    run = board[board["run"] == board["run"].iloc[0]]
    run.to_csv(tmp_path / "same.csv", index=False)
    changed = run.copy()
    changed.loc[changed.index[-1], "adversarial_accuracy"] += 0.002  # within the default tolerance, 0.005
    changed.to_csv(tmp_path / "changed.csv", index=False)
    far = run.copy()
    far.loc[far.index[-1], "adversarial_accuracy"] += 0.01
    far.to_csv(tmp_path / "far.csv", index=False)

    def compare(name):
        return subprocess.run([sys.executable, str(PAPER / "compare_published.py"), str(tmp_path / name),
                               "--board", str(PAPER.parent.parent / "leaderboard")], capture_output=True, text=True)

    same = compare("same.csv")
    assert same.returncode == 0 and f"{len(run)} of {len(run)} rows" in same.stdout
    assert "encoders identical (SHA-256): 1 of 1" in same.stdout
    near = compare("changed.csv")
    assert near.returncode == 0 and "1 within 0.005, 0 differ by more; largest difference 0.0020" in near.stdout
    other = compare("far.csv")
    assert other.returncode == 1 and "0 within 0.005, 1 differ by more; largest difference 0.0100" in other.stdout
