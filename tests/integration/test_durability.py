"""Kill the training worker mid-run: the run resumes from its checkpoint on a new worker, same result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.harness import Stack, wait_for_checkpoint
from support.specs import LONG, tiny_run

pytestmark = pytest.mark.integration


def test_sigkilled_training_worker_resumes_from_checkpoint_with_identical_result(
    stack: Stack, tiny_model_dir: Path
) -> None:
    evaluator = stack.start_worker("eval", wait=False)
    first = stack.start_worker("training", step_pace_s=0.02)  # the kill lands mid-training on a fast machine too
    evaluator.wait_ready()
    experiment = {"experiment_id": "durable", "runs": [tiny_run(tiny_model_dir, "killed", **LONG)]}
    background = stack.run_in_background(experiment, heartbeat_timeout_s=5)

    checkpoint_step = wait_for_checkpoint(stack.runs_dir, "killed")
    first.kill()  # SIGKILL: no chance to save anything more
    killed_at = json.loads(
        (
            stack.runs_dir / "runs" / "killed" / "checkpoints" / f"checkpoint-{checkpoint_step}" / "trainer_state.json"
        ).read_text()
    )["global_step"]
    assert 0 < killed_at < 250
    stack.start_worker("training", wait=False)  # starts while the lost attempt waits out its heartbeat
    [killed] = background.result(timeout_s=400).runs
    assert killed.status == "completed", killed.error
    summary = killed.training
    assert summary.resumes >= 1
    assert summary.resumed_from_steps[0] >= checkpoint_step > 0  # from the checkpoint, not from step 0
    assert summary.steps == 250

    # The same spec under another run id, never interrupted: same metrics.
    baseline = stack.run_experiment(
        {"experiment_id": "baseline", "runs": [tiny_run(tiny_model_dir, "straight", **LONG)]}
    )
    [straight] = baseline.runs
    assert straight.status == "completed" and straight.training.resumes == 0
    assert killed.metrics == straight.metrics
    assert summary.final_loss == straight.training.final_loss

    events = [
        json.loads(line) for line in (stack.runs_dir / "runs" / "killed" / "events.jsonl").read_text().splitlines()
    ]
    resume = next(e for e in events if e["event"] == "resume")
    assert resume["attempt"] >= 2 and resume["recovery_seconds"] is not None and resume["steps_lost"] >= 0
    # Wall time spans both attempts, so the time lost to the crash is in it.
    assert summary.wall_time_s > resume["recovery_seconds"]
