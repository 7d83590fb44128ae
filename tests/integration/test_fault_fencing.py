"""Fault matrix items 3, 4 and 8 with real worker processes and a real Temporal dev server:

3. a training worker SIGKILLed while a checkpoint is being written: the run resumes from the previous
   complete checkpoint, with the same metrics as an uninterrupted run;
4. a stale attempt (its worker frozen past the heartbeat timeout, not dead) kept running beside the
   attempt that replaced it: its writes are refused and logged, and the result is identical;
8. the snapshot's evaluation rows changed between training and evaluation: detected, the run fails
   at once naming the file.

(Item 10, a full or read-only runs volume during a checkpoint, is in tests/unit/test_run_safety.py: a
real 20 MiB tmpfs where the test may mount one, and an injected ENOSPC/EROFS at the flush.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from support.harness import Stack, WorkerProcess
from support.specs import tiny_run

from bert_eval.core.data.snapshot import LABEL
from bert_eval.core.storage.checkpoints import CHECKPOINT_MANIFEST, CheckpointStore
from bert_eval.core.storage.layout import RunLayout

pytestmark = pytest.mark.integration

# 120 steps, a checkpoint every 10: long enough to freeze or kill a worker mid-run.
LONG = dict(max_train_samples=960, batch_size=8, checkpoint_every_steps=10, learning_rate=5e-4)
STEPS = 120
# What an attempt logs once it is stopping or done: past these it publishes nothing more.
ATTEMPT_ENDED = {
    "stop requested; checkpoint saved, stopping",
    "fine-tune cancelled; checkpoint saved",
    "fine-tune finished",
}


def _store(stack: Stack, run_id: str) -> CheckpointStore:
    return CheckpointStore(stack.runs_dir / "runs" / run_id / "checkpoints")


def _wait(condition, what: str, timeout_s: float = 240.0, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(every_s)
    raise TimeoutError(f"{what}: not within {timeout_s}s")


def _kill_while_saving(worker: WorkerProcess, store: CheckpointStore) -> tuple[int, int]:
    """SIGKILL `worker` while a checkpoint is being written (a staging directory exists after the
    worker is frozen), past its first complete checkpoint. Returns (previous complete step, tries)."""
    _wait(store.latest_complete, "first checkpoint")
    tries = 0
    while worker.process.poll() is None:
        staging = _wait(
            lambda: [p for p in store.directory.glob(".staging-*") if any(p.iterdir())],
            "a checkpoint being written",
            every_s=0.002,
        )
        os.kill(worker.pid, signal.SIGSTOP)
        tries += 1
        if any(p.exists() for p in staging):  # frozen mid-save: the kill lands inside the write
            previous = store.latest_complete()
            worker.kill()
            assert previous is not None
            return previous.step, tries
        os.kill(worker.pid, signal.SIGCONT)  # the save finished before the freeze; try the next one
    raise AssertionError("the worker exited before a save could be interrupted")


def _attempt_lines(worker: WorkerProcess, run_id: str, attempt: int) -> list[str]:
    """The events `worker` logged for `attempt` of `run_id`."""
    events = []
    for line in worker.log_file.read_text().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("run_id") == run_id and record.get("attempt") == attempt:
                events.append(record["event"])
    return events


def _freeze_current_attempt(stack: Stack, run_id: str, workers: tuple[WorkerProcess, ...]) -> tuple[WorkerProcess, int]:
    """SIGSTOP the worker whose attempt holds `run_id`'s fence, at a moment that attempt is still
    training. On a loaded machine an attempt can also lose its heartbeat by itself and stop before the
    freeze (then another attempt holds the fence, or soon will): try again on whichever holds it then.
    Returns (frozen worker, its attempt number)."""
    attempt_file = RunLayout(stack.runs_dir, run_id).attempt_file
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        current = json.loads(attempt_file.read_text())
        holder = next((w for w in workers if w.pid == current["pid"]), None)
        if holder is not None:
            os.kill(holder.pid, signal.SIGSTOP)
            still_current = json.loads(attempt_file.read_text())["token"] == current["token"]
            if still_current and not ATTEMPT_ENDED & set(_attempt_lines(holder, run_id, current["attempt"])):
                return holder, current["attempt"]
            os.kill(holder.pid, signal.SIGCONT)
        time.sleep(0.05)
    raise TimeoutError(f"run {run_id}: no training attempt to freeze within 120 s")


@pytest.mark.slow
def test_kill_mid_checkpoint_and_stale_attempt_keep_results_identical(
    stack: Stack, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, first = stack.start_workers("eval", "training")

    # 3. SIGKILL while a checkpoint is being written.
    killed_run = stack.run_in_background(
        {"experiment_id": "kill-mid-save", "runs": [tiny_run(tiny_model_dir, "mid-save", **LONG)]},
        heartbeat_timeout_s=5,
    )
    previous_step, tries = _kill_while_saving(first, _store(stack, "mid-save"))
    second = stack.start_worker("training", wait=False)
    [mid_save] = killed_run.result(timeout_s=400).runs
    assert mid_save.status == "completed", mid_save.error
    assert mid_save.training.steps == STEPS and mid_save.training.resumed_from_steps[0] == previous_step
    events = [
        json.loads(line) for line in (stack.runs_dir / "runs" / "mid-save" / "events.jsonl").read_text().splitlines()
    ]
    resume = next(e for e in events if e["event"] == "resume")
    for checkpoint in _store(stack, "mid-save").directory.glob("checkpoint-*"):
        assert (checkpoint / CHECKPOINT_MANIFEST).is_file()  # no torn checkpoint under a real name

    # 4. A stale attempt beside the new one: freeze the busy worker past the heartbeat timeout, let a
    # second worker take the run over, then let the frozen one continue.
    third = stack.start_worker("training")
    stale_run = stack.run_in_background(
        {"experiment_id": "stale", "runs": [tiny_run(tiny_model_dir, "stale", **LONG)]}, heartbeat_timeout_s=4
    )
    _wait(_store(stack, "stale").latest_complete, "first checkpoint of the stale run")
    busy, frozen_attempt = _freeze_current_attempt(stack, "stale", (second, third))
    idle = third if busy is second else second
    attempt_file = RunLayout(stack.runs_dir, "stale").attempt_file
    _wait(
        lambda: json.loads(attempt_file.read_text())["attempt"] > frozen_attempt,
        "a later attempt claimed the run",
        timeout_s=120,
    )
    os.kill(busy.pid, signal.SIGCONT)  # the stale attempt runs on beside the new one
    refused = f"run stale: attempt {frozen_attempt} may not publish"
    refusal = _wait(lambda: refused in busy.log_file.read_text(), "the stale attempt's refusal", timeout_s=180)
    [stale] = stale_run.result(timeout_s=400).runs
    assert refusal and stale.status == "completed", stale.error
    assert stale.training.steps == STEPS and stale.training.resumes >= 1
    assert '"fine-tune started"' in idle.log_file.read_text()
    refused_lines = [line for line in busy.log_file.read_text().splitlines() if "may not publish" in line]

    # The same spec, never interrupted: the same numbers.
    [straight] = stack.run_experiment(
        {"experiment_id": "straight", "runs": [tiny_run(tiny_model_dir, "straight", **LONG)]}
    ).runs
    assert straight.status == "completed" and straight.training.resumes == 0
    assert mid_save.metrics == straight.metrics and mid_save.training.final_loss == straight.training.final_loss
    assert stale.metrics == straight.metrics and stale.training.final_loss == straight.training.final_loss
    with capsys.disabled():
        print(
            f"\nfault 3 (kill mid-checkpoint, {tries} freeze(s) to land inside a save): "
            f"resumed from step {previous_step}, "
            f"steps lost {resume['steps_lost']}, recovery {resume['recovery_seconds']} s, metrics identical"
            f"\nfault 4 (stale attempt): {len(refused_lines)} write(s) refused: {refused_lines[0][:220]}; "
            f"metrics identical"
        )


def test_snapshot_tampered_between_training_and_evaluation_is_detected(stack: Stack, tiny_model_dir: Path) -> None:
    # The training worker runs the training workflow, and so the snapshot.
    snapshotter, _ = stack.start_workers("eval", "training")
    background = stack.run_in_background({"experiment_id": "tamper", "runs": [tiny_run(tiny_model_dir, "tampered")]})

    def published_snapshot() -> Path | None:
        root = stack.runs_dir / "snapshots"
        found = [m for m in root.glob("*/manifest.json") if not m.parent.name.startswith(".")] if root.is_dir() else []
        return found[0] if found else None

    manifest = _wait(published_snapshot, "the snapshot")
    snapshotter.terminate()  # no eval worker until the rows are changed
    validation = manifest.parent / "validation.parquet"
    rows = pd.read_parquet(validation)
    rows.loc[0, LABEL] = 1 - rows.loc[0, LABEL]  # one label flipped: a valid file with other rows
    rows.to_parquet(validation)
    stack.start_worker("eval", wait=False)
    [run] = background.result(timeout_s=400).runs
    assert run.status == "failed"
    assert "run tampered" in run.error and "validation.parquet changed after the snapshot was taken" in run.error
    assert (stack.runs_dir / "runs" / "tampered" / "training-summary.json").is_file()  # training itself completed
    assert not (stack.runs_dir / "runs" / "tampered" / "eval-validation.json").exists()
