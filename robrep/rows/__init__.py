"""The result row, in one home: its key, columns and named groups, validation, the results CSV, and the
per-example mask files a cell leaves beside its rows. Numbers as numbers, one row per key
(encoder, data set, task, suite, attack and its config, radius, test points, seed, label fraction).

Rows are merged by key, never by order, so a resumed or scaled-out run adds no duplicates. Every row
read is validated against the layout (``parse_row``): a row that is cut short, holds junk or lacks its
provenance is reported with its file and line and kept out of tables, resumes and publishing.

This package imports neither the attacks nor the harness: reading rows loads no attack library.
"""
from robrep.rows.files import frame, keyed_records, merge, plain_records, read_results, write_results
from robrep.rows.layout import (
    CHECK_COLUMNS, COLUMNS, ENCODER_FIELDS, EVIDENCE_COLUMNS, KEY, MATCH_RUN, PER_RUN, SCHEMA, ResultsError, cell_key,
    cell_keys, encoder_fields, is_false, is_missing, normalize, parse_row, passed, radius_grid, row_key,
)
from robrep.rows.masks import done_cells, is_finished, load_masks, masks_path, save_masks

__all__ = [
    "CHECK_COLUMNS", "COLUMNS", "ENCODER_FIELDS", "EVIDENCE_COLUMNS", "KEY", "MATCH_RUN", "PER_RUN", "SCHEMA",
    "ResultsError", "cell_key", "cell_keys", "done_cells", "encoder_fields", "frame", "is_false", "is_finished",
    "is_missing", "keyed_records", "load_masks", "masks_path", "merge", "normalize", "parse_row", "passed", "plain_records", "radius_grid",
    "read_results", "row_key", "save_masks", "write_results",
]
