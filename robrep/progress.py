"""Progress: the one protocol long work reports through, and its plain-line form.

``Progress`` is what ``train``, ``bench`` (and ``sweep``, through it) and ``verify`` call as they go; every
method does nothing here, so the library is quiet unless asked. The CLI subclasses it (bars on a terminal,
``LineProgress``'s lines elsewhere); the Python API's ``progress=True`` logs ``LineProgress``'s lines at INFO.
An attack reports its steps through the bound method ``advance``. The library only logs and never configures
logging: ``show_progress()`` is for a script that wants those lines on stderr without a logging set-up of its own.
"""
from __future__ import annotations

import logging
from typing import Callable


class Progress:
    """What long work tells as it goes (all no-ops here; override the ones you show)."""

    def cells(self, total: int | None) -> None:
        """The work has ``total`` units: a bench's cells, a verify's claims."""

    def phase(self, description: str, total: int | None) -> None:
        """A unit starts (training a learner, an attack cell, a claim), of ``total`` steps (None: unknown)."""

    def advance(self, n: int = 1, info: str = "") -> None:
        """``n`` steps of the current unit are done; ``info``: what they say (an epoch's losses)."""

    def completed(self, n: int) -> None:
        """``n`` units of the work are done, on any process."""

    def cell_done(self, description: str, rows: list[dict], seconds: float) -> None:
        """This process finished an attack cell: its rows (one per radius) took ``seconds``."""

    def epoch_done(self, line: str) -> None:
        """A learner being trained finished an epoch, told in one line (``epoch_line``)."""

    @classmethod
    def of(cls, hooks) -> "Progress":
        """``hooks`` as a Progress: None gives the quiet one; an object with some of the methods above (by name)
        gets those, the others doing nothing."""
        if isinstance(hooks, Progress):
            return hooks
        progress = cls()
        for name in ("cells", "phase", "advance", "completed", "cell_done", "epoch_done"):
            if callable(getattr(hooks, name, None)):
                setattr(progress, name, getattr(hooks, name))
        return progress


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


class LineProgress(Progress):
    """Progress as lines handed to ``emit``: one per trained epoch, one per finished cell, numbered ``[i/N]`` over
    the run's cells."""

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
    """Make robrep's INFO log lines visible (to stderr) where the application has not configured logging.

    Called by the user (``robrep.progress.show_progress()`` before ``robrep.bench(progress=True)``), never by
    the library."""
    logger = logging.getLogger("robrep")
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    if not logging.getLogger().handlers and not any(
            not isinstance(h, logging.NullHandler) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
