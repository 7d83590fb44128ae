"""Helpers the core's unit tests share: a small run spec on real SST-2 rows, and its snapshot."""

from __future__ import annotations

from pathlib import Path

from bert_eval.core.records import SnapshotResult
from bert_eval.core.snapshot import SnapshotInput, create_snapshot
from bert_eval.spec import RunSpec


def core_spec(model_dir: Path, run_id: str, **train: object) -> RunSpec:
    """192 training rows, 64 evaluation rows, a checkpoint every 5 steps; `train` overrides any of it."""
    hyper = dict(epochs=1, batch_size=16, learning_rate=1e-3, max_train_samples=192, max_seq_length=48, seed=3, checkpoint_every_steps=5)
    hyper.update(train)
    return RunSpec(run_id=run_id, model=str(model_dir), dataset="glue/sst2", train=hyper, eval={"max_eval_samples": 64})


def core_snapshot(spec: RunSpec, runs_dir: Path, data_dir: Path) -> SnapshotResult:
    return create_snapshot(SnapshotInput.for_run(spec), runs_dir=runs_dir, data_dir=data_dir)
