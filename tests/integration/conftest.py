from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bert_eval.temporal.devserver import start_dev_server

from .harness import Stack, free_port


@pytest.fixture
def stack(tmp_path: Path, data_dir: Path) -> Iterator[Stack]:
    """A fresh dev server (own state), runs dir and log dir per test; workers are started by the test."""
    port = free_port()
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    server = start_dev_server(port=port, ui_port=None, db_file=None, log_file=log_dir / "temporal.log")
    runs_dir = tmp_path / "bert_runs"
    runs_dir.mkdir()
    stack = Stack(address=f"127.0.0.1:{port}", runs_dir=runs_dir, data_dir=data_dir, log_dir=log_dir, server=server)
    try:
        yield stack
    finally:
        stack.close()


def tiny_run(model_dir: Path, run_id: str, **train: object) -> dict:
    """A run spec on real SST-2 rows with the tiny random BERT: seconds per run on CPU."""
    hyper = {
        "epochs": 1,
        "batch_size": 16,
        "learning_rate": 1.0e-3,
        "max_seq_length": 64,
        "max_train_samples": 256,
        "seed": 7,
        "checkpoint_every_steps": 4,
        "logging_steps": 2,
    }
    hyper.update(train)
    return {
        "run_id": run_id,
        "model": str(model_dir),
        "dataset": "glue/sst2",
        "train": hyper,
        "eval": {"split": "validation", "max_eval_samples": 128},
    }
