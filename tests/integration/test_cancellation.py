"""Cancelling an experiment reaches the running training through heartbeats within seconds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from support.harness import Stack, wait_for_checkpoint
from support.specs import LONG, tiny_run
from temporalio.client import WorkflowExecutionStatus

from bert_eval.core.storage.checkpoints import CheckpointStore
from bert_eval.experiment import parse_experiment
from bert_eval.temporal.submit import start_experiment

pytestmark = pytest.mark.integration


def test_cancel_stops_training_with_a_checkpoint_within_seconds(stack: Stack, tiny_model_dir: Path) -> None:
    # Paced: unpaced, the tiny run's 250 steps take ~2 s on an idle machine, less than a cancel
    # needs to travel (heartbeat throttle 2 s); at 0.05 s a step the cancel lands mid-training.
    evaluator = stack.start_worker("eval", wait=False)
    training = stack.start_worker("training", step_pace_s=0.05)
    evaluator.wait_ready()
    experiment = parse_experiment({"experiment_id": "cancelled", "runs": [tiny_run(tiny_model_dir, "stopped", **LONG)]})

    async def go() -> tuple[float, WorkflowExecutionStatus | None]:
        client = await stack.client()
        handle = await start_experiment(client, experiment, stack.settings())
        await asyncio.to_thread(wait_for_checkpoint, stack.runs_dir, "stopped")
        cancelled_at = time.monotonic()
        await handle.cancel()
        while '"fine-tune cancelled' not in training.log_file.read_text():
            assert time.monotonic() - cancelled_at < 30, "training did not stop within 30 s of the cancel"
            await asyncio.sleep(0.1)
        stopped_after = time.monotonic() - cancelled_at
        child = await client.get_workflow_handle("train-stopped").describe()
        return stopped_after, child.status

    stopped_after, child_status = asyncio.run(go())
    assert stopped_after < 15
    assert child_status is WorkflowExecutionStatus.CANCELED
    # It stopped mid-run with a checkpoint, so a resubmission would resume rather than restart.
    latest = CheckpointStore(stack.runs_dir / "runs" / "stopped" / "checkpoints").latest_complete()
    assert latest is not None and 0 < latest.step < 250
    assert not (stack.runs_dir / "runs" / "stopped" / "model").exists()
