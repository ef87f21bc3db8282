"""The benchmark harness: ``bench()`` (``robrep.bench``) and its configuration.

- ``config``: ``BenchConfig``, typed and validated once, before any work;
- ``plan``: the jobs and cells a bench runs (``make_jobs``), and what of them is done or would run
  (``plan``, ``--dry-run``);
- ``execute``: validate, resolve the learners, plan, then prepare each job (obtain the encoder, fit
  and save a probe per task) and run every unfinished attack cell, in one process or on the ranks
  of a torchrun launch (``robrep.distributed``); one writer records rows and worst cases;
- ``store``: the run folder's results store (SQLite, one writer per command) with its inbox of
  posted cells, and its CSV export.

The row layout itself (key, columns, validation) is ``robrep.rows``.
"""
from robrep.data import DatasetError
from robrep.harness.config import DEFAULT_LEARNERS, BenchConfig
from robrep.harness.execute import bench, run_cell
from robrep.harness.plan import Job, make_jobs, plan, probe_indices, test_indices
from robrep.board.tables import summary_table
from robrep.harness.worst import consistency_warnings, worst_case_rows
from robrep.validate import ConfigError

__all__ = [
    "BenchConfig", "ConfigError", "DEFAULT_LEARNERS", "DatasetError", "Job", "bench",
    "make_jobs", "plan",
    "consistency_warnings", "probe_indices", "run_cell", "summary_table", "test_indices", "worst_case_rows",
]
