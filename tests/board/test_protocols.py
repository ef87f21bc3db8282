"""Standard protocols: a board ranks only its protocol's verified entries; a way in for outside encoders."""
from __future__ import annotations

import dataclasses
import shutil

import pandas as pd
import pytest

import robrep.protocols as P
from robrep.board.leaderboard import ARCHIVE, EXPERIMENTS, read_boards, route
from robrep.cli import main
from robrep.harness import BenchConfig
from robrep.rows.files import read_results
from robrep.validate import ConfigError
from tests.fixtures import REPO

# a protocol small enough for a test: the real one's shape at a budget that takes seconds
TINY = dataclasses.replace(P.PROTOCOLS["mnist5k-linf"], radii=(0.0, 0.1), n_examples=40, suites=("native", "foolbox"),
                           steps=20, restarts=2, verify={"steps": 20, "restarts": 2, "tolerance": 0.01})


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    monkeypatch.setitem(P.PROTOCOLS, "mnist5k-linf", TINY)
    monkeypatch.setenv("ROBREP_CACHE", str(tmp_path / "cache"))  # its encoders are its own (one thread)
    return TINY


def test_a_protocol_fixes_the_run_and_refuses_what_would_change_it():
    cfg = BenchConfig(protocol="mnist5k-l2", learners=("vae",))
    assert (cfg.norm, cfg.radii, cfg.n_examples, cfg.suites, cfg.worst_case) == (
        "l2", P.L2, 500, ("native", "torchattacks", "foolbox"), "cascade")
    with pytest.raises(ConfigError, match="protocol mnist5k-linf fixes n_examples = 500"):
        BenchConfig(protocol="mnist5k-linf", n_examples=50)
    with pytest.raises(ConfigError, match="did you mean 'mnist5k-linf'"):
        BenchConfig(protocol="mnist5k-lin")


def test_an_adversarial_probe_is_the_protocols_only_at_its_headline_radius():
    board = read_results(REPO / "leaderboard" / "mnist5k-linf.csv")
    entry = board[board["run"] == board["run"].iloc[0]]
    protocol = P.PROTOCOLS["mnist5k-linf"]
    assert protocol.mismatches(entry.assign(probe="adversarial linf 0.1")) == []
    assert any("probe adversarial linf 0.2" in r for r in protocol.mismatches(entry.assign(probe="adversarial linf 0.2")))


def test_every_board_of_the_repository_ranks_only_its_protocols_verified_entries():
    for path in sorted((REPO / "leaderboard").glob("*.csv")):
        board = read_results(path)
        routed = route(board)
        assert set(routed) == {"standard"}, (path.name, {k: v[1][:2] for k, v in routed.items()})
        worst = board[board["suite"] == "worst-case"]
        assert len(worst) and worst["verified"].astype(str).str.startswith("held").all()
    archive = read_results(REPO / "leaderboard" / ARCHIVE / "mnist5k-linf.csv")
    assert archive is not None and set(route(archive)) == {ARCHIVE}


def _bench(tmp_path, name, **kw):
    from robrep import bench

    out = tmp_path / name
    bench(out=str(out), learners=("vae",), epochs=1, **kw)  # threads: the process default (a set count stays set)
    return out


@pytest.mark.slow
def test_a_quick_run_goes_to_experiments_with_its_reasons_and_a_protocol_run_to_the_board(tiny, tmp_path, capsys):
    quick = _bench(tmp_path, "quick", n_examples=30, steps=2, restarts=1, radii=(0.0, 0.1))
    board = tmp_path / "board"
    assert main(["leaderboard", str(quick), "--out", str(board)]) == 0
    assert not list(board.glob("*.csv")) and (board / EXPERIMENTS / "mnist5k-linf.csv").is_file()
    notes = route(read_results(quick / "results.csv"))[EXPERIMENTS][1]
    assert "n_examples 30 (the protocol: 40)" in notes[0] and "no worst case" in notes[0]

    std = _bench(tmp_path, "std", protocol="mnist5k-linf")
    assert main(["leaderboard", str(std), "--out", str(board)]) == 0  # verified first, then admitted
    assert "verifying" in capsys.readouterr().out
    ranked = read_boards(board)
    assert set(ranked["n_examples"]) == {40} and ranked["verified"].fillna("").str.startswith("held").any()


@pytest.mark.slow
def test_a_submission_from_outside_is_admitted_with_its_entry_and_a_bad_one_refused(tiny, tmp_path, capsys):
    from robrep.board.entries import read_entries

    run = _bench(tmp_path, "theirs", protocol="mnist5k-linf")
    sub = tmp_path / "submission"
    assert main(["leaderboard", "--submit", str(run), "--out", str(sub)]) == 0
    assert {"results.csv", "entry.toml", "probes", "checkpoints", "config.toml"} <= {p.name for p in sub.iterdir()}
    board = tmp_path / "board"
    assert main(["leaderboard", "--admit", str(sub), "--out", str(board)]) == 2  # entry not filled in
    assert "fill in" in capsys.readouterr().out and not list(board.glob("*.csv"))
    entry = (sub / "entry.toml").read_text()
    for key, value in (("family", "VAE"), ("submitter", "someone outside"), ("submitted", "2026-01-01"),
                       ("paper", "Kingma and Welling 2014")):
        entry = entry.replace(f'{key} = ""', f'{key} = "{value}"')
    (sub / "entry.toml").write_text(entry)
    shutil.move(str(run), str(tmp_path / "gone"))  # the maintainers have only the submission folder
    assert main(["leaderboard", "--admit", str(sub), "--out", str(board)]) == 0
    ranked = read_boards(board)
    assert set(ranked["submitter"]) == {"someone outside"} and set(ranked["family"]) == {"VAE"}
    assert list(read_entries(board).values())[0]["paper"] == "Kingma and Welling 2014"

    raised = pd.read_csv(sub / "results.csv")
    at = raised["radius"] == 0.1
    raised.loc[at, "adversarial_accuracy"] = raised.loc[at, "nominal_accuracy"]  # "no point was broken"
    raised.to_csv(sub / "results.csv", index=False)
    before = (board / "mnist5k-linf.csv").read_bytes()
    assert main(["leaderboard", "--admit", str(sub), "--out", str(board)]) != 0
    assert (board / "mnist5k-linf.csv").read_bytes() == before  # nothing written


def test_resort_keeps_every_standard_entry_where_it_stands(tmp_path):
    """Re-sorting the published boards moves nothing off a standard board: the same run on the same points
    under another protocol (a figure's per-attack run) is another entry, and a row two boards hold is one row."""
    from robrep.board.leaderboard import resort

    shutil.copytree(REPO / "leaderboard", tmp_path / "lb")
    before = {p.name: len(read_results(p)) for p in (tmp_path / "lb").glob("*.csv")}
    resort(tmp_path / "lb")
    assert {p.name: len(read_results(p)) for p in (tmp_path / "lb").glob("*.csv")} == before


def test_a_run_republished_with_replace_leaves_the_section_it_no_longer_belongs_to(tmp_path):
    """An entry published without its verify verdict goes to experiments/; republished with its verdict and
    --replace it is ranked on the board, and its old rows leave experiments/ (a run lives in one section)."""
    from robrep.board.leaderboard import publish

    board = read_results(REPO / "leaderboard" / "mnist5k-linf.csv")
    entry = board[(board["run"] == sorted(set(board["run"]))[0]) & (board["probe"] == "standard")]
    unverified = tmp_path / "unverified.csv"
    entry.assign(verified="").to_csv(unverified, index=False)
    verified = tmp_path / "verified.csv"
    entry.to_csv(verified, index=False)
    out = tmp_path / "board"
    out.mkdir()
    publish([unverified], out=out)
    assert not (out / "mnist5k-linf.csv").is_file()
    assert set(read_results(out / EXPERIMENTS / "mnist5k-linf.csv")["run"]) == set(entry["run"])
    publish([verified], out=out, replace=True)
    assert set(read_results(out / "mnist5k-linf.csv")["run"]) == set(entry["run"])
    left = read_results(out / EXPERIMENTS / "mnist5k-linf.csv")
    assert left is None or not set(left["run"]) & set(entry["run"])


def test_replace_leaves_the_same_run_under_another_protocol_where_it_is(tmp_path):
    """Republishing a board entry with --replace takes its old rows out of every section, and only them: the same
    run on the same points under another protocol (a figure's per-attack run in experiments/) stays."""
    from robrep.board.leaderboard import publish

    board = read_results(REPO / "leaderboard" / "mnist5k-linf.csv")
    entry = board[(board["run"] == sorted(set(board["run"]))[0]) & (board["probe"] == "standard")]
    figure = tmp_path / "figure.csv"  # the same run and points, attacked per attack: an experiment
    entry.assign(protocol="per-attack").to_csv(figure, index=False)
    ranked = tmp_path / "ranked.csv"
    entry.to_csv(ranked, index=False)
    out = tmp_path / "board"
    out.mkdir()
    publish([figure, ranked], out=out)
    kept = read_results(out / EXPERIMENTS / "mnist5k-linf.csv")
    assert len(kept) == len(entry) and set(kept["protocol"]) == {"per-attack"}
    publish([ranked], out=out, replace=True)
    assert len(read_results(out / "mnist5k-linf.csv")) == len(entry)
    left = read_results(out / EXPERIMENTS / "mnist5k-linf.csv")
    assert len(left) == len(entry) and set(left["protocol"]) == {"per-attack"}
