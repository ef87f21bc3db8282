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
    (["train", "--learner", "nope"], "known learners: beta-vae"),
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
