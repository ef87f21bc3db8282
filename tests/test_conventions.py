"""The conventions people arrive with from other toolkits: fractions as radii, eps, Linf, did-you-mean, module:attr."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

import robrep
from robrep.harness.config import BenchConfig
from robrep.registry import LEARNERS, UnknownNameError
from robrep.validate import ConfigError
from tests.fixtures import REPO


@pytest.mark.parametrize("spelling", ["linf", "Linf", "LINF", "L_inf", "inf", "l2", "L2", "2"])
def test_norms_in_every_usual_spelling(spelling):
    assert BenchConfig(norm=spelling).norm == ("l2" if "2" in spelling else "linf")


def test_a_norm_that_is_none_of_them_is_refused_saying_what_is_expected():
    with pytest.raises(ConfigError, match="linf or l2"):
        BenchConfig(norm="l1")


def test_radii_as_fractions_and_eps_as_their_alias():
    assert BenchConfig(radii=["0", "8/255"]).radii == (0.0, 8 / 255)
    assert BenchConfig.from_values({"eps": 8 / 255}).radii == (0.0, 8 / 255)
    assert BenchConfig.from_values({"eps": ["4/255", 8 / 255]}).radii == (0.0, 4 / 255, 8 / 255)
    with pytest.raises(ConfigError, match="eps or radii, not both"):
        BenchConfig.from_values({"eps": 0.1, "radii": (0, 0.1)})
    with pytest.raises(ConfigError, match="fraction such as 8/255"):
        BenchConfig(radii=["0", "8/0"])


def test_an_unknown_option_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) epss \(did you mean 'eps'"):
        robrep.bench(epss=0.1)
    with pytest.raises(ConfigError, match="did you mean 'n_examples'"):
        robrep.bench(n_example=10)


def test_bench_shows_every_option_in_its_signature_and_docstring():
    import dataclasses

    params = inspect.signature(robrep.bench).parameters
    fields = [f.name for f in dataclasses.fields(BenchConfig)]
    assert [p for p in params if p in fields] == fields and "eps" in params
    assert all(params[f].kind is inspect.Parameter.KEYWORD_ONLY for f in fields)
    assert params["radii"].default == BenchConfig().radii and params["steps"].default == 100
    assert all(f"``{f}``" in robrep.bench.__doc__ for f in fields)


def test_a_misspelled_learner_gets_did_you_mean():
    with pytest.raises(UnknownNameError, match=r"did you mean 'vae'\?"):
        LEARNERS.get("vea")
    with pytest.raises(UnknownNameError) as e:
        LEARNERS.get("zzzzzz")
    assert "did you mean" not in str(e.value)


def test_a_dotted_path_suggests_module_colon_attr():
    from robrep.encoders.resolve import resolve

    with pytest.raises(UnknownNameError, match="did you mean 'torch.nn:Linear'"):
        resolve("torch.nn.Linear")


def test_the_command_line_takes_fractions_linf_and_eps(tmp_path):
    env_run = dict(cwd=tmp_path, capture_output=True, text=True, timeout=300)
    done = subprocess.run([sys.executable, "-m", "robrep", "bench", "--radii", "0,8/255", "--norm", "Linf",
                           "--learner", "vae", "--dry-run"], **env_run)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "robrep", "bench", "--radii", "0,8/x", "--dry-run"], **env_run)
    assert done.returncode == 2 and "8/255" in done.stderr
    assert not list(tmp_path.iterdir())  # a dry run and a refused command write nothing


def test_list_shows_whole_first_sentences_as_plain_text():
    from robrep.escape import first_sentence

    assert first_sentence("Smooth Encoder with ``selection_steps`` steps (Madry et al. 2018).\n\nMore.") == \
        "Smooth Encoder with selection_steps steps (Madry et al. 2018)."
    assert first_sentence("One line\ngoes on. Second sentence.") == "One line goes on."
    done = subprocess.run([sys.executable, "-m", "robrep", "list"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "300"}, cwd=REPO)
    assert done.returncode == 0 and "``" not in done.stdout
    row = next(line for line in done.stdout.splitlines() if " se-adversarial " in line)
    cells = [c.strip() for c in row.split("│")]  # kind, name, from, description, family; paper
    assert "selection_steps sign steps" in cells[4] and cells[4].endswith(")."), row
    assert cells[5].startswith("Smooth Encoder; Cemgil, Ghaisas, Dvijotham, Kohli"), row


def test_leaderboard_outside_a_clone_says_where_it_looked_and_how_to_point_it(tmp_path):
    done = subprocess.run([sys.executable, "-m", "robrep", "leaderboard"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    said = " ".join((done.stdout + done.stderr).split())  # the terminal may wrap it
    assert done.returncode == 2
    assert str(tmp_path / "leaderboard") in said and "--out PATH" in said


def test_a_fractional_radius_comes_back_from_the_bench_and_its_csv_exactly(tmp_path, monkeypatch):
    import pandas as pd

    monkeypatch.setenv("ROBREP_CACHE", str(tmp_path / "cache"))  # its encoder is its own (one thread)

    df = robrep.bench(learners=["vae"], epochs=1, n_examples=30, steps=2, restarts=1, eps=8 / 255,
                      out=str(tmp_path / "run"))
    assert sorted(df["radius"]) == [0.0, 8 / 255]
    written = pd.read_csv(tmp_path / "run" / "results.csv")
    assert sorted(written["radius"]) == [0.0, 8 / 255]  # the key as it was computed, not rounded
    again = robrep.bench(learners=["vae"], epochs=1, n_examples=30, steps=2, restarts=1, radii=["0", "8/255"],
                         out=str(tmp_path / "run"))
    assert len(again) == 2 and again["adversarial_accuracy"].tolist() == df["adversarial_accuracy"].tolist()
