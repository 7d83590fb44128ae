"""`bert-eval chaos kill` against real local workers: it kills the busy one and the run resumes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import tiny_run
from .harness import Stack
from .test_durability import LONG, _wait_for_checkpoint

pytestmark = pytest.mark.integration


def test_chaos_kill_targets_the_busy_training_worker_and_training_resumes(stack: Stack, tiny_model_dir: Path) -> None:
    stack.start_worker("eval")
    workers = [stack.start_worker("training"), stack.start_worker("training")]
    experiment = {"experiment_id": "chaos", "runs": [tiny_run(tiny_model_dir, "chaotic", **LONG)]}
    background = stack.run_in_background(experiment, heartbeat_timeout_s=5)
    _wait_for_checkpoint(stack.runs_dir, "chaotic")
    busy = next(w for w in workers if w.holds_training)

    chaos = subprocess.run(
        [sys.executable, "-m", "bert_eval", "chaos", "kill", "--target", "local"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert chaos.returncode == 0, chaos.stderr
    assert f"killed process {busy.pid}" in chaos.stdout
    assert busy.process.wait(timeout=10) == -9
    assert all(w.process.poll() is None for w in workers if w is not busy)

    [run] = background.result(timeout_s=300).runs
    assert run.status == "completed", run.error
    assert run.training.resumes >= 1 and run.training.resumed_from_steps[0] > 0
