"""robrep verify: published numbers against an independent attack; a number raised by hand is caught."""
import pandas as pd

from robrep.cli import main
from robrep.harness import bench


def test_verify_holds_on_a_fresh_bench_and_catches_numbers_raised_by_hand(tmp_path, capsys):
    out = tmp_path / "b"
    bench(out=str(out), learners=("vae",), epochs=1, radii=(0.0, 0.1, 0.2), steps=50, restarts=5, n_examples=100)
    assert main(["verify", str(out)]) == 0
    assert "all 3 verifiable number(s) hold" in capsys.readouterr().out
    df = pd.read_csv(out / "results.csv")
    assert df["verified"].str.startswith("held: independent torchattacks PGD 50x5").all()  # recorded in the rows

    raised = df.copy()
    raised.loc[raised["radius"] == 0.1, "adversarial_accuracy"] += 0.1
    raised.to_csv(out / "results.csv", index=False)
    assert main(["verify", str(out)]) == 1
    text = capsys.readouterr().out
    assert "1 of 3 published number(s) do not hold" in text
    assert pd.read_csv(out / "results.csv")["adversarial_accuracy"].equals(raised["adversarial_accuracy"])  # untouched


def test_verify_says_what_is_wrong_with_a_folder(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 2
    assert "holds no results to verify" in capsys.readouterr().out


NET = '''
import torch
from torch import nn


class Net(nn.Module):
    """A fixed random encoder robrep never trains (no checkpoint)."""

    def __init__(self, shape=(1, 28, 28), width=32, seed=SEED):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(shape[0] * shape[1] * shape[2], width), nn.ReLU())

    def forward(self, x):
        return self.body(x)
'''


def test_verify_builds_an_encoder_without_a_checkpoint_again_and_refuses_another(tmp_path, capsys, monkeypatch):
    """A module given as module:attr has no checkpoint: verify builds it again from what its rows record, and
    refuses to vouch for rows when the module now builds another encoder."""
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fixednet.py").write_text(NET.replace("SEED", "0"))
    out = tmp_path / "b"
    bench(out=str(out), learners=("fixednet:Net",), radii=(0.0, 0.05), steps=20, restarts=2, n_examples=60)
    assert main(["verify", str(out)]) == 0
    assert "all 2 verifiable number(s) hold" in capsys.readouterr().out
    assert pd.read_csv(out / "results.csv")["verified"].str.startswith("held").all()

    import importlib
    import sys

    (tmp_path / "fixednet.py").write_text(NET.replace("SEED", "1"))  # the module changed since the bench
    sys.modules.pop("fixednet", None)
    importlib.invalidate_caches()
    assert main(["verify", str(out)]) != 0
    assert "is not the encoder of its rows" in capsys.readouterr().out
