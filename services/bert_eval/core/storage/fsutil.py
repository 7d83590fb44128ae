"""Durable file writes: temp name, fsync, rename. Nothing is ever overwritten half-way. And one bounded read
for files a user gives.

`publish_dir` is the one way a directory (checkpoint, snapshot, final model) is put into place:
staging directory -> fsync of every file and directory in it -> rename -> fsync of the parent, so after
a crash the target is either absent or complete, and the rename itself survives a power loss.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "discard_dir",
    "fsync_dir",
    "fsync_tree",
    "publish_dir",
    "read_capped",
]


def read_capped(path: str | Path, limit: int) -> bytes | None:
    """A file's bytes, or None when it holds more than `limit` bytes: only `limit` + 1 bytes are ever read, so a
    huge (or endless) file costs nothing. Raises OSError as `open` does."""
    with open(path, "rb") as handle:
        raw = handle.read(limit + 1)
    return None if len(raw) > limit else raw


def fsync_dir(path: Path) -> None:
    """fsync the directory `path` itself, so the renames and creations in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and directory below root (before renaming it into place)."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def publish_dir(staging: Path, target: Path, *, replace: bool = False) -> bool:
    """Rename a fully written `staging` directory to `target` durably; True when it was published.

    An existing `target` is kept (False, `staging` discarded) unless `replace`, in which case it is
    moved aside first and deleted after the new one is in place. `staging` must be a sibling of `target`
    (same filesystem: the rename is atomic). On any error `staging` is removed; `target` is untouched.
    """
    staging, target = Path(staging), Path(target)
    try:
        fsync_tree(staging)
        aside = None
        if target.exists():
            if not replace:
                discard_dir(staging)
                return False
            aside = target.parent / f".replaced-{target.name}-{uuid.uuid4().hex[:8]}"
            os.rename(target, aside)
        try:
            os.rename(staging, target)
        except OSError:
            if aside is not None:
                os.rename(aside, target)  # put the previous one back
            elif target.exists():  # published concurrently by another writer: theirs is as good
                discard_dir(staging)
                return False
            raise
        fsync_dir(target.parent)
    except BaseException:
        discard_dir(staging)
        raise
    if aside is not None:
        discard_dir(aside)
    return True


def discard_dir(path: Path) -> None:
    """Remove a staging or superseded directory; a missing one is fine."""
    shutil.rmtree(path, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path` durably; see `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` under a temporary name, fsync, rename over `path`, fsync the directory.

    Readers see the old content or the new, never a part; the parent directory is created if missing. On
    any error the temporary file is removed and the error re-raised.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    """Write `payload` as indented, key-sorted JSON (non-JSON values via `str`) to `path` durably."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
