"""A training workflow's history does not grow with the run: progress travels in heartbeats only."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from support.harness import Stack
from support.specs import tiny_run

from bert_eval.temporal.names import training_workflow_id

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_long_run_keeps_a_short_history(served: Stack, tiny_model_dir: Path) -> None:
    # 600 steps and 30 checkpoints with the tiny model (about a minute on an idle 2-core machine).
    spec = tiny_run(
        tiny_model_dir,
        "long",
        max_train_samples=600,
        batch_size=1,
        max_seq_length=16,
        checkpoint_every_steps=20,
        logging_steps=50,
    )
    [run] = served.run_experiment({"experiment_id": "long", "runs": [spec]}).runs
    assert run.status == "completed" and run.training.steps == 600, run.error

    async def history():
        client = await served.client()
        return (await client.get_workflow_handle(training_workflow_id("long")).fetch_history()).events

    events = asyncio.run(history())
    signals = [e for e in events if e.HasField("workflow_execution_signaled_event_attributes")]
    assert signals == []
    # The same few dozen events whatever the length (a signal per checkpoint would add 90 or more).
    assert len(events) < 60
    print(
        f"\nhistory bound: {run.training.steps} steps, {run.training.checkpoints_saved} checkpoints, "
        f"{len(events)} history events"
    )
