"""The snapshot the core's unit tests train on (their spec comes from support.specs.core_spec)."""

from __future__ import annotations

from pathlib import Path

from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot
from bert_eval.core.records import SnapshotResult
from bert_eval.spec import RunSpec


def core_snapshot(spec: RunSpec, runs_dir: Path, data_dir: Path) -> SnapshotResult:
    return create_snapshot(SnapshotInput.for_run(spec), runs_dir=runs_dir, data_dir=data_dir)
