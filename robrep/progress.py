"""Progress as plain lines: one per trained epoch and one per finished attack cell. The CLI prints them when
its output is not a terminal; the Python API logs them at INFO when asked (``progress=True``)."""
from __future__ import annotations

import logging
from typing import Callable


def epoch_line(what: str, epoch: int, epochs: int | None, means: dict[str, float], seconds: float) -> str:
    """One trained epoch in one line: ``train vae on mnist5k: epoch 3/30  loss 123.4  recon 100.2  (0.5 s)``."""
    parts = "  ".join(f"{k} {v:.4g}" for k, v in means.items())
    return f"{what}: epoch {epoch}/{epochs or '?'}  {parts}  ({seconds:.1f} s)"


def cell_line(description: str, rows: list[dict], seconds: float, number: int | None = None,
              total: int | None = None) -> str:
    """One finished cell in one line: ``[i/N] attack: learner / dataset / task  r=0 0.890  r=0.1 0.038  (12.3 s)``."""
    accs = "  ".join(f"r={row['radius']:g} {row['adversarial_accuracy']:.3f}"
                     for row in sorted(rows, key=lambda r: r["radius"]))
    where = f"[{number}/{total}] " if number is not None and total else ""
    return f"{where}{description}  {accs}  ({seconds:.1f} s)"


class LineProgress:
    """The bench's progress hooks (``robrep.harness.execute.BenchProgress``) as lines handed to ``emit``: one per
    trained epoch, one per finished cell, numbered ``[i/N]`` over the run's cells."""

    def __init__(self, emit: Callable[[str], None]):
        self.emit = emit
        self.total, self.done = None, 0

    def cells(self, total):
        self.total = total

    def completed(self, n):
        self.done = max(self.done, n)

    def cell_done(self, description, rows, seconds):
        self.done += 1
        self.emit(cell_line(description, rows, seconds, self.done, self.total))

    def epoch_done(self, line):
        self.emit(line)


def log_progress(logger: logging.Logger) -> LineProgress:
    """Progress lines logged at INFO on ``logger`` (``robrep.bench(progress=True)``)."""
    return LineProgress(lambda line: logger.info("%s", line))


def show_progress() -> None:
    """Make robrep's INFO log lines visible (to stderr) where the application has not configured logging."""
    logger = logging.getLogger("robrep")
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not any(
            not isinstance(h, logging.NullHandler) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
