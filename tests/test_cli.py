import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import robrep
from robrep.cli import main


def test_train_command_saves_a_checkpoint_that_reloads(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "--learner", "se-random", "--epochs", "1", "--seed", "3", "--out", str(out),
               "--set", "latent_dim=8", "--set", "gamma=20"])
    assert rc == 0
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    learner = robrep.load(out)
    assert learner.config.latent_dim == 8 and learner.config.gamma == 20 and learner.config.epochs == 1
    assert learner.run_info["seed"] == 3 and learner.run_info["history"][0]["epoch"] == 1
    printed = capsys.readouterr().out
    assert "saved to" in printed and "coupling" in printed


@pytest.mark.parametrize("argv,message", [
    (["train", "--learner", "nope"], "known learners: ae, beta-tcvae, beta-vae"),
    (["train", "--dataset", "imagenet"], "known datasets: celeba"),
    (["train", "--learner", "vae", "--set", "gamma=3"], "no config field"),
    (["train", "--dataset", "celeba", "--data-root", "/nonexistent/celeba"], "list_attr_celeba.txt"),
])
def test_bad_input_gives_a_clear_error_and_exit_code_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in " ".join(capsys.readouterr().out.split())


def test_list_shows_learners_and_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("vae", "beta-vae", "se-random", "se-adversarial", "mnist5k", "colormnist5k", "celeba"):
        assert name in out


def test_console_script_is_installed():
    # the script sits beside the interpreter of the environment robrep is installed in
    beside = Path(sys.executable).parent / "robrep"
    exe = str(beside) if beside.exists() else shutil.which("robrep")
    assert exe, "the robrep console script is not installed"
    res = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == f"robrep {robrep.__version__}"


@pytest.mark.slow
def test_bench_piped_to_a_file_logs_a_line_per_epoch_and_cell_and_keeps_tables_whole(tmp_path):
    """`robrep bench > log.txt`: plain lines as work finishes (no progress bars), tables never wrapped at 80
    columns, the resolved configuration saved as TOML in the run folder, files with the user's umask."""
    import os
    import stat
    import sys

    from robrep.harness import BenchConfig

    out, log = tmp_path / "run", tmp_path / "log.txt"
    label = "se-random:a-label-long-enough-to-make-the-table-wider-than-eighty-columns"
    argv = [sys.executable, "-m", "robrep", "bench", "--learner", "vae", "--learner", label, "--epochs", "1",
            "--n-examples", "40", "--steps", "3", "--restarts", "1", "--out", str(out), "--threads", "1"]
    env = {**os.environ, "ROBREP_CACHE": str(tmp_path / "cache"), "COLUMNS": "80"}
    with open(log, "w") as fh:
        rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, env=env, preexec_fn=lambda: os.umask(0o027),
                            timeout=600).returncode
    text = log.read_text()
    assert rc == 0, text
    lines = text.splitlines()
    epochs = [i for i, line in enumerate(lines) if ": epoch 1/1  loss " in line]
    cells = [i for i, line in enumerate(lines) if "] native/pgd: " in line and " r=0.2 " in line]
    header = [i for i, line in enumerate(lines) if "learner" in line and "r=0.2" in line]
    assert len(epochs) == 2 and len(cells) == 2 and len(header) == 1, text
    assert max(epochs) < min(cells) < max(cells) < header[0], text  # as the work finished, then the table
    assert lines[cells[0]].startswith("[1/2] native/pgd: ") and lines[cells[1]].startswith("[2/2] "), text
    row = [line for line in lines[header[0]:] if label.split(":")[1] in line and line.startswith("│")]
    assert len(row) == 1 and len(row[0]) > 80 and row[0].count(".") >= 5, text  # one line, all five radii
    assert "━" not in "".join(line for line in lines if "epoch" in line or "] native" in line)  # no bars
    cfg = BenchConfig.from_toml(out / "config.toml")
    assert cfg.learners == ("vae", label) and cfg.epochs == 1 and cfg.steps == 3 and cfg.threads == 1
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()}
    assert {"results.csv", "config.toml", "robustness.png"} <= set(modes)
    assert all(m == 0o640 for m in modes.values()), modes  # 0666 less the umask 027, as `touch` would


def test_the_python_api_is_quiet_by_default_and_logs_progress_when_asked(tmp_path, caplog):
    import logging

    import robrep

    kw = dict(learners=["vae"], epochs=1, n_examples=30, steps=2, restarts=1, radii=[0.0, 0.1], threads=1)
    with caplog.at_level(logging.INFO, logger="robrep"):
        robrep.bench(out=str(tmp_path / "quiet"), **kw)
        quiet = [r.getMessage() for r in caplog.records if "] native/pgd: " in r.getMessage()]
        caplog.clear()
        robrep.bench(out=str(tmp_path / "loud"), progress=True, **kw)
        loud = [r.getMessage() for r in caplog.records if "] native/pgd: " in r.getMessage()]
    assert not quiet and len(loud) == 1 and "r=0.1 " in loud[0] and loud[0].startswith("[1/1]")
    assert all(r.levelno == logging.INFO for r in caplog.records if "] native/pgd: " in r.getMessage())


@pytest.mark.slow
def test_train_piped_to_a_file_prints_a_line_per_epoch(tmp_path):
    import os
    import sys

    log = tmp_path / "train.txt"
    argv = [sys.executable, "-m", "robrep", "train", "--learner", "vae", "--epochs", "2", "--threads", "1",
            "--out", str(tmp_path / "ckpt")]
    with open(log, "w") as fh:
        rc = subprocess.run(argv, stdout=fh, stderr=subprocess.STDOUT, timeout=600,
                            env={**os.environ, "ROBREP_CACHE": str(tmp_path / "cache")}).returncode
    lines = log.read_text().splitlines()
    assert rc == 0, lines
    epochs = [line for line in lines if line.startswith("train vae on mnist5k: epoch ")]
    assert [line.split(":")[1].split()[1] for line in epochs] == ["1/2", "2/2"], lines
    assert all(" loss " in line and line.endswith(" s)") for line in epochs)
    assert "━" not in log.read_text().split("┏")[0]  # no progress bar before the closing table
