"""The identity of a job's data: a digest of the bytes behind `data.path`, computed before anything is loaded.

MLflow's dataset digest (logged with each split) hashes at most 10,000 values of an array and its shape: a label
edited past the first rows of a table leaves it unchanged. This digest reads every byte of the file (or of every
file under the folder, with its relative path), so an edit anywhere gives another job. Sources without a path
(built-in data sets, the Keras cache) are identified by their config alone; a loader of one's own that reads files
it is not given through `data.path` is not seen here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

DIGEST_PARAM = "data.digest"  # the run param (and the sweep's) holding the digest
BLOCK = 1 << 20  # bytes read at a time


def content_digest(path: str | os.PathLike) -> str:
    """sha256 (16 hex digits) of a file's bytes, or of every file under a folder (sorted relative paths and bytes)."""
    location = Path(path)
    files = [location] if location.is_file() else sorted(p for p in location.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        if file != location:
            digest.update(file.relative_to(location).as_posix().encode() + b"\0")
        read_into(digest, file)
    return digest.hexdigest()[:16]


def read_into(digest: Any, path: str | os.PathLike) -> Any:
    """Feeds a file's bytes into `digest` (a hashlib object), `BLOCK` bytes at a time; returns `digest`."""
    with Path(path).open("rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest


def data_digest(data: dict[str, Any], root: str | os.PathLike | None = None) -> str | None:
    """The digest of `data.path` (read from `root` when relative, as the loaders read it); None without a path or
    when nothing is there (the loader then says what is missing)."""
    path = data.get("path")
    if not path:
        return None
    location = Path(path).expanduser()
    if not location.is_absolute() and root is not None:
        location = Path(root) / location
    return content_digest(location) if location.exists() else None


def data_params(data: dict[str, Any], root: str | os.PathLike | None = None) -> dict[str, str]:
    """`{"data.digest": ...}` for a run's params (and so its job key), or {} for data without a path."""
    digest = data_digest(data, root)
    return {DIGEST_PARAM: digest} if digest else {}
