"""`bert-eval wait`, the step `make demo-k8s` runs in the eval worker pod, driven through the same
sequence against real local workers: submit, wait for the first checkpoint, kill the training worker,
start its replacement (as the Deployment would), wait for the result and read `resumes: 1`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import Stack
from support.specs import LONG, tiny_run

pytestmark = pytest.mark.integration


def bert_eval_wait(stack: Stack, *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bert_eval", "wait", *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def test_wait_sequences_submit_checkpoint_kill_and_result(stack: Stack, tiny_model_dir: Path) -> None:
    evaluator = stack.start_worker("eval", wait=False)
    # Paced (>= 0.1 s a step, 250 steps): the kill must land before training ends, on any machine.
    first = stack.start_worker("training", step_pace_s=0.1)
    evaluator.wait_ready()
    experiment = {"experiment_id": "exp-demo-k8s", "runs": [tiny_run(tiny_model_dir, "demo-k8s", **LONG)]}
    background = stack.run_in_background(experiment, heartbeat_timeout_s=5)

    started = bert_eval_wait(stack, "exp-demo-k8s", "--until", "started")
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip() == "experiment exp-demo-k8s: started"

    checkpoint = bert_eval_wait(stack, "exp-demo-k8s", "--until", "checkpoint")
    assert checkpoint.returncode == 0, checkpoint.stderr
    (line,) = checkpoint.stdout.splitlines()
    assert line.startswith("run demo-k8s: checkpoint-")
    saved_step = int(line.rsplit("-", 1)[1])
    assert saved_step > 0

    first.kill()  # SIGKILL: no final checkpoint, like `kubectl delete pod --grace-period=0 --force`
    stack.start_worker("training", wait=False)  # the Deployment's replacement pod

    done = bert_eval_wait(stack, "exp-demo-k8s", "--until", "done")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    assert line.startswith("run demo-k8s: completed, steps ")
    assert ", resumes: 1, " in line
    [run] = background.result(timeout_s=120).runs
    assert run.training.resumes == 1 and run.training.resumed_from_steps[0] >= saved_step


def test_wait_for_a_checkpoint_after_training_ended_reports_it(served: Stack, tiny_model_dir: Path) -> None:
    """A run can finish between two polls; `wait --until checkpoint` must not then wait out --timeout."""
    served.run_experiment({"experiment_id": "exp-fast", "runs": [tiny_run(tiny_model_dir, "fast")]})
    waited = bert_eval_wait(served, "exp-fast", "--until", "checkpoint", timeout_s=120)
    assert waited.returncode == 0, waited.stderr
    assert waited.stdout.strip() == "run fast: checkpoint saved, training already ended (steps 16, checkpoints 4)"


def test_wait_gives_up_with_a_message_that_names_the_experiment(stack: Stack) -> None:
    waited = bert_eval_wait(stack, "never-submitted", "--until", "started", "--timeout", "3", timeout_s=60)
    assert waited.returncode == 1
    message = " ".join(waited.stderr.split())  # rich wraps long lines
    assert "experiment never-submitted: not started after 3s" in message
    assert "bert-eval status never-submitted" in message
