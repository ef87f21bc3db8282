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
