"""The benchmark harness: ``bench()`` (``robrep.bench``) and its configuration.

- ``config``: ``BenchConfig``, typed and validated once, before any work;
- ``plan``: what a bench would train, what is done in its folder, what would run (``--dry-run``);
- ``execute``: resolve the learners, then per data set and learner obtain the encoder, fit a
  probe per task, run every attack cell (skipping finished ones) and record rows and worst cases;
- ``store``: the run folder's results store (SQLite, any number of writers) and its CSV export.

The row layout itself (key, columns, validation) is ``robrep.results``.
"""
from robrep.data import DatasetError
from robrep.harness.config import DEFAULT_LEARNERS, BenchConfig, check_out
from robrep.harness.execute import BenchProgress, bench, probe_indices, run_cell, test_indices
from robrep.results import consistency_warnings, summary_table, worst_case_rows
from robrep.validate import ConfigError

__all__ = [
    "BenchConfig", "BenchProgress", "ConfigError", "DEFAULT_LEARNERS", "DatasetError", "bench", "check_out",
    "consistency_warnings", "probe_indices", "run_cell", "summary_table", "test_indices", "worst_case_rows",
]
