"""End-to-end: real dev server, real worker processes, real Trainer, real SST-2 rows."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from support.harness import Stack
from support.specs import tiny_run

from bert_eval.temporal.workflows import (
    CheckpointedBertTrainingWorkflow,
    CoordinatorWorkflow,
    coordinator_workflow_id,
    training_workflow_id,
)

pytestmark = pytest.mark.integration


def test_experiment_trains_and_evaluates_every_run(served: Stack, tiny_model_dir: Path) -> None:
    result = served.run_experiment(
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
        run_dir = served.runs_dir / "runs" / record.run_id
        assert (run_dir / "model" / "config.json").is_file()
        on_disk = json.loads((run_dir / "eval-validation.json").read_text())
        assert on_disk["metrics"] == record.metrics
    # The workflows answer queries after the fact too: coordinator status and training progress.
    status, progress = asyncio.run(_queries(served))
    assert {(r.run_id, r.phase.value) for r in status.runs} == {("tiny-a", "completed"), ("tiny-b", "completed")}
    assert all(set(r.metrics) == {"accuracy", "f1", "mcc"} for r in status.runs)
    assert (progress.phase, progress.step, progress.total_steps) == ("completed", 16, 16)
    # Both runs selected the same rows: one content-addressed snapshot serves them.
    assert len([p for p in (served.runs_dir / "snapshots").iterdir() if not p.name.startswith(".")]) == 1


async def _queries(stack: Stack):
    client = await stack.client()
    status = await client.get_workflow_handle(coordinator_workflow_id("two-runs")).query(CoordinatorWorkflow.status)
    progress = await client.get_workflow_handle(training_workflow_id("tiny-a")).query(
        CheckpointedBertTrainingWorkflow.progress
    )
    return status, progress
