"""The results store cannot lose or invent rows: damaged CSV rows are reported and kept out, concurrent
writers keep every row, a resume with another thread count recomputes nothing, and bench returns
exactly the rows of its own protocol."""
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from robrep.cli import main
from robrep.harness import bench
from robrep.harness.store import ResultsStore
from robrep.board.leaderboard import LeaderboardError, publish
from robrep.rows import read_results

SMALL = dict(learners=("vae",), epochs=1, radii=(0.0, 0.1), steps=3, restarts=1, n_examples=40)


@pytest.fixture
def finished(tmp_path):
    out = tmp_path / "run"
    df = bench(out=str(out), suites=("native", "foolbox"), **SMALL)
    return out, df


def _no_attacks(monkeypatch):
    execute = importlib.import_module("robrep.harness.execute")
    monkeypatch.setattr(execute, "run_cell", lambda *a, **k: pytest.fail("a finished cell was computed again"))


def test_a_truncated_row_is_reported_with_its_line_and_kept_out_of_publishing(finished, tmp_path, caplog):
    out, df = finished
    text = (out / "results.csv").read_text()
    cut = text[: text.rindex("\n", 0, len(text) - 1) + 1]  # every row but the last ...
    last = text[len(cut):]
    cut += last[: last.index(df["encoder_sha256"].iloc[0]) + 20]  # ... which is cut inside its provenance
    damaged = tmp_path / "damaged.csv"
    damaged.write_text(cut)
    rows = read_results(damaged)
    n = len(text.splitlines()) - 1
    assert len(rows) == n - 1
    [(file, line, reason)] = rows.attrs["invalid"]
    assert file == str(damaged) and line == n + 1 and "fields" in reason
    assert f"damaged.csv:{n + 1}: row has" in caplog.text
    with pytest.raises(LeaderboardError, match=f"1 row.*do not fit the row layout.*damaged.csv:{n + 1}"):
        publish([damaged], out=tmp_path / "board")
    assert not (tmp_path / "board").exists()


def test_a_cut_value_is_caught_by_the_layout():
    from robrep.rows import parse_row

    good = pd.read_csv("leaderboard/mnist5k-linf.csv").iloc[0].to_dict()
    assert parse_row(good)["adversarial_accuracy"] == good["adversarial_accuracy"]
    for column, value, reason in (("timestamp", "2026-11-2", "not a timestamp"), ("probe_sha256", "abcdef0123",
                                  "not a SHA-256"), ("checks_passed", "", "checks_passed is empty"),
                                  ("seed", "0.5", "not an integer"), ("adversarial_accuracy", "89.69", "not in [0, 1]")):
        with pytest.raises(ValueError, match=re.escape(reason)):
            parse_row({**good, column: value})


def test_a_junk_line_is_kept_out_and_the_resume_recomputes_nothing(finished, monkeypatch):
    out, df = finished
    (out / "results.sqlite").unlink()  # a folder from before the store: its CSV is imported
    with open(out / "results.csv", "a") as fh:
        fh.write("this is not a row,1.5,junk\n")
    _no_attacks(monkeypatch)
    again = bench(out=str(out), suites=("native", "foolbox"), **SMALL)
    assert len(again) == len(df) and again["seed"].dtype.kind == "i"
    pd.testing.assert_series_equal(again["adversarial_accuracy"], df["adversarial_accuracy"])
    rejected = pd.read_csv(out / "results-rejected.csv")
    assert len(rejected) == 1 and "this is not a row" in rejected["text"].iloc[0]
    assert "junk" in (out / "results.csv.orig").read_text()  # the original is kept
    assert "junk" not in (out / "results.csv").read_text()


def test_with_the_store_a_damaged_csv_loses_nothing(finished, monkeypatch):
    out, df = finished
    (out / "results.csv").write_text((out / "results.csv").read_text()[:300])  # truncated mid-line
    _no_attacks(monkeypatch)
    again = bench(out=str(out), suites=("native", "foolbox"), **SMALL)
    assert len(again) == len(df)
    assert len(pd.read_csv(out / "results.csv")) == len(df)  # exported whole again


def test_a_resume_with_another_thread_count_recomputes_nothing(finished, monkeypatch):
    out, df = finished
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        _no_attacks(monkeypatch)
        again = bench(out=str(out), suites=("native", "foolbox"), **SMALL)
    finally:
        torch.set_num_threads(threads)
    pd.testing.assert_frame_equal(again.reset_index(drop=True), df.reset_index(drop=True))  # timestamps too
    masks = list((out / "examples").rglob("*.safetensors"))
    assert len(masks) == 5  # one per attack cell, none orphaned


def test_bench_returns_the_rows_of_its_own_protocol(tmp_path, capsys):
    out = str(tmp_path)
    assert main(["bench", "--learner", "vae", "--epochs", "1", "--radii", "0,0.1", "--steps", "10", "--restarts", "1",
                 "--n-examples", "40", "--out", out]) == 0
    capsys.readouterr()
    df = bench(out=out, **{**SMALL, "steps": 1})
    assert (df["steps"] == 1).all() and len(df) == 2
    assert main(["bench", "--learner", "vae", "--epochs", "1", "--radii", "0,0.1", "--steps", "1", "--restarts", "1",
                 "--n-examples", "40", "--out", out]) == 0
    printed = capsys.readouterr().out
    r01 = df[df["radius"] == 0.1]["adversarial_accuracy"].iloc[0]
    assert f"{r01:.3f}" in printed and ("all 2 rows passed" in printed or "failed a check (converged: 1)" in printed)
    assert len(pd.read_csv(tmp_path / "results.csv")) == 4  # both protocols are kept in the folder


def test_two_concurrent_commands_on_one_folder_keep_both_runs_rows(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--epochs", "1", "--radii", "0,0.1", "--steps", "2", "--restarts", "1", "--n-examples", "30",
              "--out", str(tmp_path / "shared")]
    procs = [subprocess.Popen([sys.executable, "-m", "robrep", "bench", "--learner", name, *common], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for name in ("vae", "beta-vae")]
    for p in procs:
        output = p.communicate(timeout=600)[0]
        assert p.returncode == 0, output
    df = pd.read_csv(tmp_path / "shared" / "results.csv")
    assert set(df["learner"]) == {"vae", "beta-vae"} and len(df) == 4


def _open_store(path, barrier, errors):
    barrier.wait()  # every process opens the new store at the same moment
    try:
        ResultsStore(Path(path)).add(pd.DataFrame())
    except Exception as e:  # noqa: BLE001 - reported to the test
        errors.put(f"{type(e).__name__}: {e}")


@pytest.mark.slow
def test_processes_opening_one_new_store_together_all_get_it(tmp_path):
    """Switching a new store to WAL fails at once ("database is locked") when another process opens it too, whatever
    the busy timeout; before the store retried, 4 processes opening one new store failed in about 1 of 4 tries."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for trial in range(20):
        (tmp_path / str(trial)).mkdir()
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_store, args=(tmp_path / str(trial), barrier, errors)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, failures


def test_files_get_the_users_permissions(finished):
    out, _ = finished
    umask = os.umask(0)
    os.umask(umask)
    for path in (out / "results.csv", next((out / "probes").rglob("*.safetensors"))):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_cells_posted_by_a_killed_run_count_as_done_and_are_collected_by_the_next(finished, tmp_path, monkeypatch):
    """A rank that posted a cell and died before the writer collected it: --dry-run already counts the cell as
    done, and the next bench stores its rows without attacking again."""
    import shutil
    import sqlite3

    from robrep.harness.config import BenchConfig
    from robrep.harness.plan import plan
    from robrep.harness.store import post

    out, df = finished
    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    for name in ("results.sqlite", "results.sqlite-wal", "results.sqlite-shm", "results.csv"):
        (moved / name).unlink(missing_ok=True)
    cells = [g for _, g in df[df["suite"] != "worst-case"].groupby(["suite", "attack"])]
    for i, rows in enumerate(cells):
        post(moved, f"cell{i}", rows)  # as ranks post them: rows wait in the inbox, the store is empty
    cfg = BenchConfig(out=str(moved), suites=("native", "foolbox"), **SMALL)
    assert set(plan(cfg)["status"]) == {"done"}
    _no_attacks(monkeypatch)
    again = bench(cfg)
    assert len(again) == len(df) and not list((moved / "inbox").glob("*.json"))
    key = ["suite", "attack", "radius"]
    pd.testing.assert_frame_equal(again.sort_values(key)[key + ["adversarial_accuracy"]].reset_index(drop=True),
                                  df.sort_values(key)[key + ["adversarial_accuracy"]].reset_index(drop=True))
    with sqlite3.connect(moved / "results.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == len(df)


def test_two_commands_amending_one_run_at_once_keep_both_columns(finished, monkeypatch):
    """robrep verify and robrep certify on one finished run at the same time (each reads the rows, adds its
    columns, writes them back): the second waits for the first, so neither's columns are lost, in the store and in
    the CSV. Without the transaction the slower one writes back rows read before the other's columns existed."""
    import threading
    import time

    from robrep.harness import store as store_module
    from robrep.rows.layout import row_key

    out, _ = finished
    rows = ResultsStore(out).frame()
    slow = threading.Event()
    frame = ResultsStore.frame

    def slow_frame(self):
        df = frame(self)
        if threading.current_thread().name == "verify" and not slow.is_set():
            slow.set()
            time.sleep(1.0)  # verify has read the rows; certify writes its columns meanwhile
        return df

    monkeypatch.setattr(ResultsStore, "frame", slow_frame)
    keys = [(row_key(r), r["adversarial_accuracy"]) for r in rows.to_dict("records")]
    verify = threading.Thread(name="verify", target=store_module.amend, args=(
        out, out / "results.csv", [(k, a, {"verified": "held: a test"}) for k, a in keys]))
    certify = threading.Thread(name="certify", target=store_module.amend, args=(
        out, out / "results.csv", [(k, a, {"certified_accuracy": 0.0, "certified_by": "ibp: a test"})
                                   for k, a in keys]))
    verify.start()
    assert slow.wait(10)
    certify.start()
    verify.join(30)
    certify.join(30)
    for df in (ResultsStore(out).frame(), read_results(out / "results.csv")):
        assert len(df) == len(rows)
        assert (df["verified"] == "held: a test").all() and (df["certified_by"] == "ibp: a test").all()
