"""End-to-end: real dev server, real worker processes, real Trainer, real SST-2 rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import tiny_run
from .harness import Stack

pytestmark = pytest.mark.integration


def test_experiment_trains_and_evaluates_every_run(stack: Stack, tiny_model_dir: Path) -> None:
    stack.start_worker("training")
    stack.start_worker("eval")
    result = stack.run_experiment(
        {
            "experiment_id": "two-runs",
            "runs": [tiny_run(tiny_model_dir, "tiny-a"), tiny_run(tiny_model_dir, "tiny-b", learning_rate=5e-4)],
        }
    )
    assert [r.run_id for r in result.runs] == ["tiny-a", "tiny-b"]
    for record in result.runs:
        assert record.status == "completed", record.error
        assert record.training is not None and record.training.steps == 16
        assert set(record.metrics) == {"accuracy", "f1", "mcc"}
        assert record.evaluation is not None and record.evaluation.examples == 128
        run_dir = stack.runs_dir / "runs" / record.run_id
        assert (run_dir / "model" / "config.json").is_file()
        on_disk = json.loads((run_dir / "eval-validation.json").read_text())
        assert on_disk["metrics"] == record.metrics
    # Both runs selected the same rows: one content-addressed snapshot serves them.
    assert len([p for p in (stack.runs_dir / "snapshots").iterdir() if not p.name.startswith(".")]) == 1
