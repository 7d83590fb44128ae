"""`bert-eval chaos kill` against real local workers: it kills the busy one and the run resumes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .harness import Stack, run_on_two_training_workers

pytestmark = pytest.mark.integration


def test_chaos_kill_targets_the_busy_training_worker_and_training_resumes(stack: Stack, tiny_model_dir: Path) -> None:
    busy, idle, background = run_on_two_training_workers(stack, tiny_model_dir, "chaotic", heartbeat_timeout_s=5)

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
    assert idle.process.poll() is None

    [run] = background.result(timeout_s=300).runs
    assert run.status == "completed", run.error
    assert run.training.resumes >= 1 and run.training.resumed_from_steps[0] > 0
