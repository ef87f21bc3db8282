"""One progress protocol: training reports through it, and the library never configures logging."""
from __future__ import annotations

import logging

import robrep
from robrep.progress import Progress


class Recorder(Progress):
    def __init__(self):
        self.phases, self.steps, self.epochs = [], [], []

    def phase(self, description, total):
        self.phases.append((description, total))

    def advance(self, n=1, info=""):
        self.steps.append(info)

    def epoch_done(self, line):
        self.epochs.append(line)


def test_training_reports_one_phase_its_steps_and_its_epochs(tmp_path):
    seen = Recorder()
    robrep.train("vae", "mnist5k", out=False, epochs=2, max_steps=5, progress=seen, label="my vae")
    assert seen.phases == [("train my vae on mnist5k", 5)]
    assert len(seen.steps) == 5 and seen.steps[0].startswith("epoch 1/2  loss ")
    assert len(seen.epochs) == 1 and seen.epochs[0].startswith("train my vae on mnist5k: epoch 1/2  loss ")


def test_an_object_with_some_of_the_methods_is_enough(tmp_path):
    lines = []

    class OnlyEpochs:
        def epoch_done(self, line):
            lines.append(line)

    robrep.train("vae", "mnist5k", out=False, epochs=1, max_steps=3, progress=OnlyEpochs())
    assert len(lines) == 1 and lines[0].startswith("train vae on mnist5k: epoch 1/1")


def test_progress_true_logs_lines_and_adds_no_handler(caplog):
    root, ours = logging.getLogger(), logging.getLogger("robrep")
    before = (list(root.handlers), list(ours.handlers), ours.level)
    with caplog.at_level(logging.INFO, logger="robrep"):
        robrep.train("vae", "mnist5k", out=False, epochs=1, max_steps=2, progress=True)
    assert any(r.getMessage().startswith("train vae on mnist5k: epoch 1/1") and r.levelno == logging.INFO
               for r in caplog.records)
    assert (list(root.handlers), list(ours.handlers), ours.level) == before


def test_quiet_by_default(caplog):
    with caplog.at_level(logging.INFO, logger="robrep"):
        robrep.train("vae", "mnist5k", out=False, epochs=1, max_steps=2)
    assert not [r for r in caplog.records if "epoch 1/1" in r.getMessage()]
