"""Files as robrep writes them: whole or not at all, with the user's usual permissions, named after their content.

The one home of atomic writes and content hashes (checkpoints, probes, masks, results, boards, pages and
figures all go through here); it imports nothing of robrep's.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def short_hash(obj) -> str:
    """8 hex digits of the SHA-256 of ``obj`` as canonical JSON: names folders and files after their content."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str).encode())[:8]


@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    """The mode a plain ``open()`` would give a new file: 0666 less the user's umask (read once)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees either the old or the new file, never half of one.
    The file gets the user's usual permissions (mkstemp's own are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), _file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["atomic_write", "sha256_bytes", "short_hash"]
