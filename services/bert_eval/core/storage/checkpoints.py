"""Checkpoint store: atomic publication, newest-complete lookup by step number, bounded retention.

A checkpoint is a directory `checkpoint-<step>` holding whatever the trainer saved plus a manifest
written last. It is assembled under a `.staging-*` name, fsynced, and renamed into place, so a crash
mid-save leaves only a staging directory, which is never mistaken for a checkpoint. A save that fails
(full or read-only volume) removes its staging directory and leaves the previous checkpoint as it was.
Publication and pruning run inside an optional `guard` (the run's attempt fence), so only the current
attempt of a run can add or remove checkpoints.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bert_eval.core.storage.fsutil import discard_dir, publish_dir

__all__ = ["CHECKPOINT_MANIFEST", "Checkpoint", "CheckpointStore"]

CHECKPOINT_MANIFEST = "bert-eval-checkpoint.json"
_TRASH = ".trash-"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_STALE_STAGING_S = 3600.0


@dataclass(frozen=True)
class Checkpoint:
    """A published, complete checkpoint: its training step and its `checkpoint-<step>` directory."""

    step: int
    path: Path

    def manifest(self) -> dict[str, Any]:
        """The checkpoint's sealed manifest (what the writer recorded, plus `step` and `saved_at`)."""
        return json.loads((self.path / CHECKPOINT_MANIFEST).read_text())


# Called with the action ("publish checkpoint-50", "prune checkpoints"); refuses by raising.
Guard = Callable[[str], AbstractContextManager[Any]]


class CheckpointStore:
    """The checkpoints of one run in one directory: staged, published atomically, found by step, pruned.

    Parameters
    ----------
    directory : Path
        The run's checkpoints directory (`RunLayout.checkpoints`); created on the first save.
    keep : int, default 2
        How many complete checkpoints `prune` keeps (the newest by step).
    guard : callable, optional
        Called with the action (``"publish checkpoint-50"``, ``"prune checkpoints"``) and entered as a context
        manager around every publication and prune; it refuses by raising (the run's attempt fence).
        Default: no guard.

    Raises
    ------
    ValueError
        If `keep` is less than 1.
    """

    def __init__(self, directory: Path, *, keep: int = 2, guard: Guard | None = None) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.keep = keep
        self._guard: Guard = guard or (lambda what: contextlib.nullcontext())

    @contextlib.contextmanager
    def staging(self, *, step: int, owner: str) -> Iterator[Path]:
        """A fresh staging directory for the checkpoint of `step`, always removed on exit.

        Parameters
        ----------
        step : int
            The training step being saved (named in the error).
        owner : str
            Who writes (``"run r1"``), named in the error.

        Yields
        ------
        Path
            An empty directory beside the checkpoints, to fill and hand to `publish`.

        Raises
        ------
        OSError
            If the staging directory cannot be made or filled: names `owner`, the cause (full, read-only,
            not writable) and the intact previous checkpoint, and says what to do.
        """
        try:
            staging = self.new_staging_dir()
        except OSError as exc:
            raise self._write_failure(exc, exc.errno, step, owner) from exc
        try:
            yield staging
        except OSError as exc:
            raise self._write_failure(exc, exc.errno, step, owner) from exc
        except Exception as exc:
            # Writers below (torch, safetensors) wrap ENOSPC/EROFS in their own types: ask the volume.
            if (cause := _volume_condition(self.directory)) is None:
                raise
            raise self._write_failure(exc, cause, step, owner) from exc
        finally:
            discard_dir(staging)

    def _write_failure(self, exc: BaseException, code: int | None, step: int, owner: str) -> OSError:
        previous = self.latest_complete()
        kept = (
            f"the previous checkpoint (step {previous.step}) is intact" if previous else "no earlier checkpoint exists"
        )
        fix = {
            errno.ENOSPC: "free space on the runs volume or grow it",
            errno.EDQUOT: "free space on the runs volume or raise its quota",
            errno.EROFS: "mount the runs volume read-write",
            errno.EACCES: "give the worker's user write access to the runs volume",
        }.get(code or 0, "check the runs volume")
        reason = os.strerror(code) if code else str(exc)
        return OSError(
            code or errno.EIO,
            f"{owner}: cannot write the checkpoint of step {step} under {self.directory}: {reason}; {kept} and no "
            f"partial checkpoint was left. {fix.capitalize()}; "
            "the run resumes from the last checkpoint when retried",
        )

    def new_staging_dir(self) -> Path:
        """Create and return an empty `.staging-*` directory in the store (never taken for a checkpoint)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".staging-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        return staging

    def publish(self, staging: Path, *, step: int, manifest: dict[str, Any]) -> Checkpoint:
        """Seal a fully written staging directory as `checkpoint-<step>` (manifest written last, atomic rename).

        Parameters
        ----------
        staging : Path
            A fully written directory in the store's filesystem (made inside `staging`); gone afterwards.
        step : int
            The training step the checkpoint holds.
        manifest : dict
            What to record beside the files (JSON-serialisable); `step` and `saved_at` are added.

        Returns
        -------
        Checkpoint
            The checkpoint of `step`. If one already existed it is kept untouched and returned.

        Raises
        ------
        Exception
            Whatever the guard raises when this attempt may no longer write (the staging is removed).
        """
        payload = {**manifest, "step": step, "saved_at": time.time()}
        manifest_file = staging / CHECKPOINT_MANIFEST
        manifest_file.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        target = self.directory / f"checkpoint-{step}"
        try:
            with self._guard(f"publish checkpoint-{step}"):
                # An existing step (e.g. a time-based save right after a resume) is kept untouched.
                publish_dir(staging, target)
        finally:
            discard_dir(staging)  # already gone when published
        return Checkpoint(step, target)

    def complete(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first, ordered by step number (never by text)."""
        if not self.directory.is_dir():
            return []
        found = []
        for child in self.directory.iterdir():
            match = _NAME.match(child.name)
            if match and (child / CHECKPOINT_MANIFEST).is_file():
                found.append(Checkpoint(int(match.group(1)), child))
        return sorted(found, key=lambda c: c.step)

    def latest_complete(self) -> Checkpoint | None:
        """The complete checkpoint with the highest step, or None when there is none (a fresh run)."""
        complete = self.complete()
        return complete[-1] if complete else None

    def prune(self) -> list[Path]:
        """Delete all but the newest `keep` complete checkpoints, stale staging leftovers, and what an
        interrupted prune left behind; return the paths removed. Runs inside the guard."""
        removed = []
        with self._guard("prune checkpoints"):
            complete = self.complete()
            for old in complete[: -self.keep]:
                removed.append(self._discard(old.path))
            if complete:
                # Older releases deleted in place: a prune killed mid-delete left `checkpoint-N` with its
                # manifest gone, never resumable (only whole directories are published), so debris.
                for child in self.directory.iterdir():
                    match = _NAME.match(child.name)
                    older = match is not None and int(match.group(1)) < complete[-1].step
                    if older and not (child / CHECKPOINT_MANIFEST).exists():
                        removed.append(self._discard(child))
            for child in self.directory.glob(f"{_TRASH}*"):
                shutil.rmtree(child, ignore_errors=True)
                removed.append(child)
        now = time.time()
        for child in self.directory.glob(".staging-*"):
            try:
                if now - child.stat().st_mtime > _STALE_STAGING_S:
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child)
            except FileNotFoundError:
                continue
        return removed

    def _discard(self, path: Path) -> Path:
        """Move `path` out of the checkpoint names (one atomic rename), then delete it: a worker killed
        mid-delete leaves a `.trash-*` directory for the next prune, never a `checkpoint-N` with part of
        its files gone."""
        trash = self.directory / f"{_TRASH}{path.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return path
        shutil.rmtree(trash, ignore_errors=True)
        return path


def _volume_condition(path: Path) -> int | None:
    """ENOSPC or EROFS when the volume holding `path` is full or read-only, else None."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if stats.f_bavail == 0:
        return errno.ENOSPC
    return None
