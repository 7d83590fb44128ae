"""Preemption (`bert-eval chaos preempt`): the notice a spot reclaim or node drain gives, on the real MiniLM.

The busy training worker gets SIGTERM and, 15 seconds later, SIGKILL if it is still there (GKE gives
spot nodes 30 s of notice, of which graceful node shutdown leaves pods about 15 s). The run resumes on
the other training worker, optimizer state included, and ends with the uninterrupted run's numbers.
Prints the final checkpoint's write time and size (`-s`): what the spot profiles' grace is derived from.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import Stack, wait_for_checkpoint
from support.seed_runs import MINILM
from support.specs import tiny_run

from bert_eval.chaos import preempt_process

GRACE_S = 15
WORKER_START_TIMEOUT_S = 300
# Generous: MiniLM steps take seconds each on a busy 2-core machine (a fraction of a second otherwise).
RUN_TIMEOUT_S = 1500
# 480 rows in batches of 8: 60 optimizer steps of the 22.7M-parameter MiniLM, a checkpoint every 5.
MINILM_TRAIN = dict(
    max_train_samples=480, batch_size=8, max_seq_length=32, learning_rate=1e-4, checkpoint_every_steps=5, seed=11
)


def _minilm_run(run_id: str) -> dict:
    spec = tiny_run(Path(MINILM), run_id, eval_samples=128, **MINILM_TRAIN)
    return {**spec, "model": MINILM}


def _events(runs_dir: Path, run_id: str) -> list[dict]:
    return [json.loads(line) for line in (runs_dir / "runs" / run_id / "events.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- the signal sequence, no process


class _FakeProcess:
    """A process that exits `exits_after_s` seconds after SIGTERM (never, when None), on a fake clock."""

    def __init__(self, exits_after_s: float | None) -> None:
        self.now = 0.0
        self.exits_after_s = exits_after_s
        self.signals: list[tuple[float, int]] = []
        self.killed_at: float | None = None

    def send(self, pid: int, sig: int) -> None:
        self.signals.append((self.now, sig))
        if sig == 9:
            self.killed_at = self.now

    def gone(self, pid: int) -> bool:
        if self.killed_at is not None:
            return True
        return (
            self.exits_after_s is not None
            and bool(self.signals)
            and self.now - self.signals[0][0] >= self.exits_after_s
        )

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_preempt_sends_sigterm_and_no_sigkill_to_a_process_that_exits_within_the_grace() -> None:
    process = _FakeProcess(exits_after_s=4.0)
    exited_after, sigkilled = preempt_process(
        42, 15.0, gone=process.gone, clock=lambda: process.now, sleep=process.sleep, send=process.send
    )
    assert [sig for _, sig in process.signals] == [15]
    assert not sigkilled and 4.0 <= exited_after < 4.2


def test_preempt_sigkills_a_process_still_running_when_the_grace_ends() -> None:
    process = _FakeProcess(exits_after_s=None)
    exited_after, sigkilled = preempt_process(
        42, 15.0, gone=process.gone, clock=lambda: process.now, sleep=process.sleep, send=process.send
    )
    assert [sig for _, sig in process.signals] == [15, 9]
    sigkill_time = process.signals[1][0]
    assert 15.0 <= sigkill_time < 15.2 and sigkilled and exited_after >= 15.0


# --------------------------------------------------------------------------- real workers, real MiniLM


@pytest.mark.integration
@pytest.mark.slow
def test_minilm_preempted_with_15s_grace_resumes_to_the_uninterrupted_metrics(stack: Stack) -> None:
    # Started with subprocess (`chaos preempt --target local` finds workers by their command line), and
    # given time to import torch on a loaded machine.
    workers = [stack.start_worker(kind, wait=False, fork=False) for kind in ("eval", "training", "training")]
    for worker in workers:
        worker.wait_ready(timeout_s=WORKER_START_TIMEOUT_S)
    background = stack.run_in_background(
        {"experiment_id": "exp-preempted", "runs": [_minilm_run("preempted")]},
        heartbeat_timeout_s=10,
        timeout_s=RUN_TIMEOUT_S,
    )
    wait_for_checkpoint(stack.runs_dir, "preempted", timeout_s=RUN_TIMEOUT_S)
    busy = next(w for w in workers[1:] if w.holds_training)
    idle = next(w for w in workers[1:] if w is not busy)
    chaos = subprocess.run(
        [sys.executable, "-m", "bert_eval", "chaos", "preempt", "--grace", str(GRACE_S), "--target", "local"],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert chaos.returncode == 0, chaos.stderr
    assert f"preempted process {busy.pid}" in chaos.stdout and "exited on SIGTERM" in chaos.stdout, chaos.stdout
    assert busy.process.wait(timeout=10) == 0  # a graceful exit, not a SIGKILL
    assert idle.process.poll() is None
    [run] = background.result(timeout_s=RUN_TIMEOUT_S).runs

    events = _events(stack.runs_dir, "preempted")
    second_attempt = next(i for i, e in enumerate(events) if e["event"] == "attempt" and e.get("attempt") == 2)
    first_attempt_checkpoints = [e for e in events[:second_attempt] if e["event"] == "checkpoint"]
    final = first_attempt_checkpoints[-1]
    [resume] = [e for e in events if e["event"] == "resume"]
    # Steps lost are bounded by the last complete checkpoint: the resume starts exactly there, and the
    # final checkpoint written on SIGTERM leaves nothing beyond it.
    assert resume["from_step"] == final["step"] and resume["steps_lost"] == 0, resume
    assert 0 < final["step"] < run.training.steps

    reference = stack.run_experiment(
        {"experiment_id": "straight", "runs": [_minilm_run("straight")]}, timeout_s=RUN_TIMEOUT_S
    )
    [straight] = reference.runs
    assert straight.status == "completed" and straight.training.resumes == 0, straight
    assert run.status == "completed", run.error
    assert run.training.resumes == 1
    assert run.training.steps == straight.training.steps
    assert run.training.final_loss == pytest.approx(straight.training.final_loss, rel=1e-5)
    assert run.metrics == pytest.approx(straight.metrics, rel=1e-6)
    print(
        f"\npreemption (MiniLM, grace {GRACE_S}s): {chaos.stdout.strip()}\n"
        f"final checkpoint at step {final['step']} of {run.training.steps}: {final['bytes'] / 1e6:.1f} MB written in "
        f"{final['seconds']:.2f}s (training blocked {final['blocked_seconds']:.2f}s); "
        f"steps lost {resume['steps_lost']}; "
        f"recovery {resume['recovery_seconds']:.1f}s"
    )
