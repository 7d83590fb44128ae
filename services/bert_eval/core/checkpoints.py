"""Checkpoint store: atomic publication, newest-complete lookup by step number, bounded retention.

A checkpoint is a directory `checkpoint-<step>` holding whatever the trainer saved plus a manifest
written last. It is assembled under a `.staging-*` name, fsynced, and renamed into place, so a crash
mid-save leaves only a staging directory, which is never mistaken for a checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bert_eval.core.fsutil import fsync_dir, fsync_tree

__all__ = ["CHECKPOINT_MANIFEST", "Checkpoint", "CheckpointStore"]

CHECKPOINT_MANIFEST = "bert-eval-checkpoint.json"
_NAME = re.compile(r"^checkpoint-(\d+)$")
_STALE_STAGING_S = 3600.0


@dataclass(frozen=True)
class Checkpoint:
    step: int
    path: Path

    def manifest(self) -> dict[str, Any]:
        return json.loads((self.path / CHECKPOINT_MANIFEST).read_text())


class CheckpointStore:
    def __init__(self, directory: Path, *, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.keep = keep

    def new_staging_dir(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        staging = self.directory / f".staging-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        return staging

    def publish(self, staging: Path, *, step: int, manifest: dict[str, Any]) -> Checkpoint:
        """Seal a fully written staging directory as `checkpoint-<step>` (atomic rename)."""
        payload = {**manifest, "step": step, "saved_at": time.time()}
        manifest_file = staging / CHECKPOINT_MANIFEST
        manifest_file.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
        fsync_tree(staging)
        target = self.directory / f"checkpoint-{step}"
        if target.exists():
            # The same step was already saved (e.g. a time-based save right after a resume):
            # keep the published one untouched rather than replacing it in place.
            shutil.rmtree(staging)
            return Checkpoint(step, target)
        os.rename(staging, target)
        fsync_dir(self.directory)
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
        complete = self.complete()
        return complete[-1] if complete else None

    def prune(self) -> list[Path]:
        """Delete all but the newest `keep` complete checkpoints and stale staging leftovers."""
        removed = []
        for old in self.complete()[: -self.keep]:
            shutil.rmtree(old.path, ignore_errors=True)
            removed.append(old.path)
        now = time.time()
        for child in self.directory.glob(".staging-*"):
            try:
                if now - child.stat().st_mtime > _STALE_STAGING_S:
                    shutil.rmtree(child, ignore_errors=True)
                    removed.append(child)
            except FileNotFoundError:
                continue
        return removed
