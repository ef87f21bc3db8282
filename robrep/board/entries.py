"""What each board entry is: a human-readable name unique in the leaderboard (across its boards), the learner
family and variant, the paper and code it comes from, who submitted it and when. Kept in
``<leaderboard>/entries.toml``, one table per encoder SHA-256 (the rows carry the versions, the machine and the
config themselves).

A submission (``robrep leaderboard --submit``) carries ``entry.toml`` with these fields for its submitter to fill
in; ``robrep leaderboard --admit`` refuses one whose required fields are empty or whose name another encoder
on the board already has.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENTRIES = "entries.toml"
FIELDS = {
    "name": "a short name, unique on the board (e.g. 'SE, adversarial selection L = 20')",
    "family": "the learner family (e.g. VAE, Smooth Encoder, contrastive, supervised)",
    "variant": "what sets this entry apart within its family (selection, gamma, architecture, ...)",
    "paper": "the paper it comes from (a citation or a URL); empty if none",
    "code": "where its code is (a URL); empty if robrep's own",
    "submitter": "who submitted it (a name, or a handle)",
    "submitted": "when (YYYY-MM-DD)",
}
REQUIRED = ("name", "family", "submitter", "submitted")


class EntryError(ValueError):
    """An entry's metadata is incomplete or clashes with the board's; the message says what to fill in."""


def read_entries(folder: str | Path) -> dict[str, dict[str, str]]:
    """The board's entries, by encoder SHA-256 (empty where the board has no entries file)."""
    path = Path(folder) / ENTRIES
    if not path.is_file():
        return {}
    try:
        return {sha: dict(fields) for sha, fields in tomllib.loads(path.read_text(encoding="utf-8")).items()}
    except tomllib.TOMLDecodeError as e:
        raise EntryError(f"{path} is not valid TOML: {e}") from None


def template(sha256s: list[str], defaults: dict[str, str]) -> str:
    """``entry.toml`` for a submission to fill in: every field with what it means."""
    lines = ["# What this entry is. Fill in every field; name, family, submitter and submitted are required.",
             f"encoders = {json.dumps(sorted(set(sha256s)))}", ""]
    for key, meaning in FIELDS.items():
        lines += [f"# {meaning}", f"{key} = {json.dumps(str(defaults.get(key, '')))}"]
    return "\n".join(lines) + "\n"


def read_submission(path: str | Path) -> dict:
    """A submission's ``entry.toml``, checked: every required field filled in."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise EntryError(f"cannot read {path}: {e}") from None
    empty = [k for k in REQUIRED if not str(data.get(k, "")).strip()]
    if empty:
        raise EntryError(f"{path}: fill in {', '.join(empty)} ({'; '.join(f'{k}: {FIELDS[k]}' for k in empty)})")
    if not data.get("encoders"):
        raise EntryError(f"{path}: encoders (the SHA-256 of each encoder of the submission) is empty")
    return data


def add_entries(folder: str | Path, entry: dict) -> dict[str, dict[str, str]]:
    """The board's entries with ``entry`` added for each of its encoders; its name must not be another
    encoder's on the board. Returns them (``write_entries`` writes them)."""
    entries = read_entries(folder)
    taken = {e.get("name"): sha for sha, e in entries.items()}
    for sha in entry["encoders"]:
        other = taken.get(entry["name"])
        if other is not None and other not in entry["encoders"]:
            raise EntryError(f"the name {entry['name']!r} is already the entry of encoder {other[:12]}: choose "
                             "another in entry.toml")
        entries[sha] = {k: str(entry.get(k, "")) for k in FIELDS}
    return entries


def write_entries(folder: str | Path, entries: dict[str, dict[str, str]]) -> Path:
    import tomli_w

    from robrep.io import atomic_write

    path = Path(folder) / ENTRIES
    clean = {sha: {k: v for k, v in entries[sha].items() if k in FIELDS} for sha in sorted(entries)}
    atomic_write(path, tomli_w.dumps(clean).encode("utf-8"))
    return path
