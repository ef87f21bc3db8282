"""The paper's Table 1 form (robrep.board.tables.task_table): tasks as rows, per learner nominal and adversarial
accuracy at one radius; in the terminal, the Markdown and the PNG for data sets with many tasks."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from robrep.board.plots import plot_robustness
from robrep.board.tables import MANY_TASKS, headline_radius, many_task_datasets, task_table


def rows(dataset="celeba", tasks=("Bald", "Bangs", "Male", "Smiling"), worst=True):
    out = []
    for label, run, base in (("vae", "vae-run", 0.2), ("se", "se-run", 0.5)):
        for i, task in enumerate(tasks):
            nominal = 0.9 - 0.01 * i
            for r in (0.0, 0.05, 0.1):
                for attack, drop in (("pgd", 0.0), ("square", 0.05)):
                    out.append(dict(dataset=dataset, task=task, label=label, run=run, suite="native", attack=attack,
                                    radius=r, nominal_accuracy=nominal,
                                    adversarial_accuracy=nominal if r == 0 else base - drop - r, arch="conv",
                                    n_examples=100, label_fraction=1.0, learner_config="{}"))
                if worst and label == "se":
                    out.append(dict(out[-1], suite="worst-case", attack="worst-case",
                                    adversarial_accuracy=nominal if r == 0 else base - 0.1 - r))
    return pd.DataFrame(out)


def test_task_table_reports_the_worst_case_or_marks_the_strongest_single_attack():
    tt = task_table(rows())
    assert tt.attrs["radius"] == 0.1 and list(tt.index) == ["Bald", "Bangs", "Male", "Smiling"]
    assert tt.loc["Bald", ("se", "adversarial")] == pytest.approx(0.5 - 0.1 - 0.1)  # the worst-case row
    assert tt.loc["Bald", ("vae", "adversarial")] == pytest.approx(0.2 - 0.05 - 0.1)  # the stronger attack
    assert tt.attrs["single_attack"] == ["vae"]
    assert tt.loc["Male", ("vae", "nominal")] == pytest.approx(0.88)
    assert task_table(rows(), radius=0.05).loc["Bald", ("se", "adversarial")] == pytest.approx(0.35)


def test_a_label_with_two_runs_gets_a_column_pair_per_run():
    df = rows()
    other = df[df["label"] == "se"].assign(run="se-run-2")
    tt = task_table(pd.concat([df, other]))
    assert {lab for lab, _ in tt.columns} == {"vae", "se (se-run)", "se (se-run-2)"}


def test_which_data_sets_get_the_task_table_and_its_radius():
    small = rows("colormnist5k", tasks=("digit", "color"))
    assert MANY_TASKS == 4
    assert many_task_datasets(pd.concat([rows(), small])) == ["celeba"]
    assert headline_radius([0, 0.05, 0.1, 0.2]) == 0.1 and headline_radius([0, 0.03, 0.2]) == 0.03
    assert headline_radius([0]) == 0.0
    missing = task_table(rows(), radius=0.3)
    assert all(math.isnan(v) for v in missing[("se", "adversarial")])


def test_the_png_draws_the_task_table_and_the_line_panels_together(tmp_path):
    png = plot_robustness(pd.concat([rows(), rows("colormnist5k", tasks=("digit", "color"))]), tmp_path / "r.png")
    assert png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="no result rows"):
        plot_robustness(rows().iloc[:0], tmp_path / "none.png")
