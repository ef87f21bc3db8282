"""robrep sweep: every grid point trained and benchmarked on the validation view, the choice by a stated rule."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import robrep
from robrep.cli import main
from robrep.data import Dataset, Split
from robrep.registry import DATASETS
from robrep.sweep import choose, grid_points
from robrep.validate import ConfigError


def test_choose_takes_the_most_robust_config_above_the_floor():
    idx = pd.MultiIndex.from_tuples([(lab, "digit") for lab in "abc"], names=["label", "task"])
    scores = pd.DataFrame({"nominal": [0.95, 0.85, 0.93], "worst_case": [0.30, 0.60, 0.45]}, index=idx)
    best, floor, rule, per = choose(scores, None)  # floor: 0.95 - 0.05 = 0.90, so b is out
    assert best == "c" and floor == pytest.approx(0.90) and "0.950" in rule
    assert per["clears_floor"].tolist() == [True, False, True]
    assert choose(scores, 0.8)[0] == "b"
    with pytest.raises(ConfigError, match="no config reaches the nominal-accuracy floor 0.990"):
        choose(scores, 0.99)
    # several tasks: the mean over tasks decides
    idx2 = pd.MultiIndex.from_tuples([(lab, t) for lab in "ab" for t in ("digit", "color")], names=["label", "task"])
    two = pd.DataFrame({"nominal": [0.9] * 4, "worst_case": [0.5, 0.1, 0.2, 0.5]}, index=idx2)
    assert choose(two, None)[0] == "b"


def test_grid_points_and_bad_grids():
    assert grid_points({"gamma": [10, 50], "selection_eps": [0.1]}) == [
        {"gamma": 10, "selection_eps": 0.1}, {"gamma": 50, "selection_eps": 0.1}]
    with pytest.raises(ConfigError, match="empty"):
        grid_points({})
    with pytest.raises(ConfigError, match="'gamma' repeats a value"):
        grid_points({"gamma": [10, 10]})
    with pytest.raises(ConfigError, match="non-empty list"):
        grid_points({"gamma": []})
    with pytest.raises(ConfigError, match="data set's own name"):
        robrep.sweep("se-random", {"gamma": [1]}, dataset="mnist5k-valid")


class SealedSplit(Split):
    """A test split that cannot be read: any look at its images, labels or length fails the test."""

    def __getattribute__(self, name):
        if name in ("images", "labels", "x", "batch", "subset", "__len__"):
            raise AssertionError(f"the test split was read ({name}) during a sweep")
        return super().__getattribute__(name)


@pytest.mark.slow
def test_sweep_trains_every_point_and_chooses_on_validation_data_only(tmp_path, monkeypatch):
    # mnist5k's test split sealed: a sweep that read it anywhere (training, probes, attacks, the table) fails here
    real = DATASETS.get("mnist5k")

    def sealed(**kwargs):
        ds = real(**kwargs)
        return Dataset(ds.name, ds.train, object.__new__(SealedSplit), ds.tasks)

    monkeypatch.setitem(DATASETS._entries, "mnist5k", sealed)
    with pytest.raises(AssertionError, match="the test split was read"):  # the seal holds
        len(robrep.load_dataset("mnist5k").test)
    out = tmp_path / "sweep"
    res = robrep.sweep("se-random", {"gamma": [10.0, 50.0]}, radius=0.1, base_config={"epochs": 1}, out=out,
                       n_examples=60, budget="quick", threads=2)
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["dataset"]) == {"mnist5k-valid"}  # every number comes from the validation view
    assert set(rows["label"]) == {"se-random:gamma=10", "se-random:gamma=50"}
    assert rows["run"].nunique() == 2  # two trainings
    table = pd.read_csv(out / "sweep.csv", index_col="label")
    assert len(table) == 2 and table["chosen"].sum() == 1
    chosen = table[table["chosen"]].iloc[0]
    others = table[table["clears_floor"]]
    assert chosen["worst_case"] == others["worst_case"].max()
    # the table's numbers are the bench rows' numbers
    r = rows[(rows["label"] == chosen.name) & (rows["radius"] == 0.1)]
    assert chosen["worst_case"] == pytest.approx(r["adversarial_accuracy"].min())
    choice = json.loads((out / "choice.json").read_text())
    assert choice["choice"] == res.choice == json.loads(chosen["config"])
    assert choice["dataset"] == "mnist5k-valid" and choice["floor"] == pytest.approx(res.floor)


def test_sweep_command_prints_the_table_and_refuses_bad_keys(tmp_path, capsys):
    code = main(["sweep", "--learner", "se-random", "--grid", "gamma=10", "--set", "epochs=1", "--n-examples",
                 "30", "--budget", "quick", "--out", str(tmp_path / "s"), "--threads", "2"])
    text = capsys.readouterr().out
    assert code == 0 and "gamma=10" in text and "chosen: se-random:gamma=10" in text
    code = main(["sweep", "--learner", "se-random", "--grid", "gamm=10", "--out", str(tmp_path / "t")])
    err = capsys.readouterr()
    assert code == 2 and "gamm" in err.err + err.out and "Traceback" not in err.err + err.out
