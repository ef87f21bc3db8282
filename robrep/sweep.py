"""Choose a learner's config on held-out data: train every point of a grid, benchmark each on the data set's
validation view (``robrep.data.splits``: the training split less a held-out part, which it is attacked on), and pick
the config with the best worst-case adversarial accuracy at one radius among those whose nominal accuracy clears a
floor. The test split is never read: the bench is run on ``NAME-valid`` only.

    robrep sweep --learner se-adversarial --grid gamma=10,50,100 --grid selection_eps=0.05,0.1,0.2 --radius 0.1
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from robrep.io import atomic_write
from robrep.data.splits import SUFFIX
from robrep.validate import ConfigError

log = logging.getLogger(__name__)

NOMINAL_MARGIN = 0.05  # default floor: the best nominal accuracy in the grid less this
SUITES = ("native", "torchattacks", "foolbox")  # default: the worst case over every suite (a masked gradient cannot win)


@dataclass
class SweepResult:
    """``table``: one row per config (its overrides, nominal and worst-case accuracy per task and their means,
    whether it clears the floor, whether it was chosen); ``choice``: the chosen overrides; ``floor``: the
    nominal-accuracy floor used, and ``rule``, how it was chosen, in words."""

    table: pd.DataFrame
    choice: dict
    label: str
    floor: float
    rule: str
    radius: float
    dataset: str
    results: pd.DataFrame = field(repr=False, default=None)


def grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values, in the order given."""
    if not grid:
        raise ConfigError("sweep: the grid is empty; give at least one key with values (--grid key=v1,v2)")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"sweep: grid key {key!r} needs a non-empty list of values, got {values!r}")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"sweep: grid key {key!r} repeats a value: {list(values)}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def label_of(point: dict) -> str:
    return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in point.items())


def _scores(df: pd.DataFrame, radius: float) -> pd.DataFrame:
    """Per (label, task): nominal accuracy and the worst case over every attack at ``radius``."""
    rows = df[df["radius"].round(9) == round(radius, 9)]
    if rows.empty:
        raise ConfigError(f"sweep: no results at radius {radius:g}")
    worst = rows.groupby(["label", "task"])["adversarial_accuracy"].min()
    nominal = df.groupby(["label", "task"])["nominal_accuracy"].first()
    return pd.DataFrame({"nominal": nominal, "worst_case": worst})


def choose(scores: pd.DataFrame, min_nominal: float | None) -> tuple[str, float, str, pd.DataFrame]:
    """The label with the best mean worst case over tasks among those whose mean nominal accuracy is at least
    the floor (ties: the higher nominal accuracy, then the first in grid order)."""
    per = scores.groupby(level="label", sort=False)[["nominal", "worst_case"]].mean()
    if min_nominal is None:
        floor = float(per["nominal"].max()) - NOMINAL_MARGIN
        rule = f"nominal accuracy >= the grid's best ({per['nominal'].max():.3f}) - {NOMINAL_MARGIN:g}"
    else:
        floor = float(min_nominal)
        rule = f"nominal accuracy >= {floor:g} (given)"
    per["clears_floor"] = per["nominal"] >= floor - 1e-9
    if not per["clears_floor"].any():
        raise ConfigError(f"sweep: no config reaches the nominal-accuracy floor {floor:.3f} (best "
                          f"{per['nominal'].max():.3f}); lower --min-nominal")
    ok = per[per["clears_floor"]]
    best = ok.sort_values(["worst_case", "nominal"], ascending=False, kind="stable").index[0]
    return best, floor, rule, per


def sweep(learner: str, grid: dict[str, list], *, dataset: str = "mnist5k", radius: float = 0.1,
          min_nominal: float | None = None, base_config: dict | None = None, out: str | Path = "robrep-sweep",
          progress=False, force: bool = False, **bench_options) -> SweepResult:
    """Train and benchmark every grid point of ``learner`` on ``dataset``'s validation view and choose one.

    ``base_config``: overrides every point shares; ``bench_options``: BenchConfig fields (suites (default all three),
    steps, restarts, budget, n_examples (default: the whole validation split), arch, epochs, seed, device, threads,
    worst_case).
    ``progress``: as ``robrep.bench``'s (True: a log line per trained epoch and finished cell).
    Writes ``<out>/results.csv`` (the bench's rows), ``<out>/sweep.csv`` (the table) and ``<out>/choice.json``."""
    from robrep.harness import BenchConfig, bench

    if ":" in learner:
        raise ConfigError(f"sweep: learner must be a registered name without a label, got {learner!r}")
    if dataset.endswith(SUFFIX):
        raise ConfigError(f"sweep: give the data set's own name ({dataset[:-len(SUFFIX)]!r}); the sweep always "
                          "benchmarks its validation view")
    if not radius > 0:
        raise ConfigError(f"sweep: radius must be > 0, got {radius!r}")
    if min_nominal is not None and not 0 <= min_nominal <= 1:
        raise ConfigError(f"sweep: min_nominal must be in [0, 1], got {min_nominal!r}")
    points = grid_points(grid)
    labels = [label_of(p) for p in points]
    specs = [f"{learner}:{label}" for label in labels]
    overrides = {spec: {**(base_config or {}), **p} for spec, p in zip(specs, points)}
    cfg = BenchConfig(**{"n_examples": None, "suites": SUITES, **bench_options, "learners": tuple(specs), "learner_config": overrides,
                         "datasets": (dataset + SUFFIX,), "radii": (0.0, radius), "out": str(out)})
    log.info("sweep of %s on %s%s: %d config(s), radius %g", learner, dataset, SUFFIX, len(points), radius)
    df = bench(cfg, progress=progress, force=force)
    if not (df["dataset"] == dataset + SUFFIX).all():  # cannot happen: the bench was given the view alone
        raise RuntimeError(f"sweep: rows of {sorted(set(df['dataset']) - {dataset + SUFFIX})} in {out}; a sweep "
                           "reads the validation view only")
    scores = _scores(df, radius)
    best, floor, rule, per = choose(scores, min_nominal)
    scores = scores.unstack("task")
    scores.columns = [f"{what}[{task}]" for what, task in scores.columns]
    table = per.join(scores).loc[[f"{learner}:{label}" for label in labels]]
    table.insert(0, "config", [json.dumps(p, sort_keys=True) for p in points])
    table["chosen"] = table.index == best
    choice = points[specs.index(best)]
    out = Path(out)
    atomic_write(out / "sweep.csv", table.to_csv(index_label="label").encode())
    atomic_write(out / "choice.json", (json.dumps({
        "learner": learner, "dataset": dataset + SUFFIX, "radius": radius, "choice": choice, "floor": floor,
        "rule": rule, "bench": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("learner_config",)},
    }, indent=2, sort_keys=True, default=str) + "\n").encode())
    return SweepResult(table, choice, best, floor, rule, radius, dataset + SUFFIX, results=df)
