"""The fault matrix: real worker processes, a real Temporal server, the tiny model.

Each test prints what it measured (steps lost, seconds to recover, attempts) with `-s`.
Item 1 (SIGKILL at a random step) is test_durability.py; items 3, 4, 8, 10 live with the core's tests.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import pytest
from support.harness import Stack, result_across_outages, run_on_two_training_workers, wait_for_checkpoint
from support.specs import LONG, tiny_run

from bert_eval.core.storage.checkpoints import CHECKPOINT_MANIFEST, CheckpointStore
from bert_eval.experiment import parse_experiment
from bert_eval.temporal.history import activity_attempts
from bert_eval.temporal.names import training_workflow_id
from bert_eval.temporal.payloads import ExperimentResult
from bert_eval.temporal.submit import start_experiment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _spec(model_dir: Path, run_id: str) -> dict:
    """250 steps, checkpoints every 20; evaluation on all 872 validation rows (long enough to kill)."""
    return tiny_run(model_dir, run_id, eval_samples=None, **LONG)


@pytest.fixture(scope="module")
def reference(served: Stack, tiny_model_dir: Path) -> ExperimentResult:
    """The LONG tiny run, never interrupted: what every interrupted run must reproduce exactly."""
    result = served.run_experiment({"experiment_id": "reference", "runs": [_spec(tiny_model_dir, "reference")]})
    assert result.runs[0].status == "completed" and result.runs[0].training.resumes == 0, result
    return result


def _resume_events(runs_dir: Path, run_id: str) -> list[dict]:
    lines = (runs_dir / "runs" / run_id / "events.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["event"] == "resume"]


def _assert_same_as_reference(result_run, reference: ExperimentResult) -> None:
    [straight] = reference.runs
    assert result_run.status == "completed", result_run.error
    assert result_run.metrics == straight.metrics
    assert result_run.training.final_loss == straight.training.final_loss
    assert result_run.training.steps == straight.training.steps


def test_sigterm_saves_a_final_checkpoint_and_loses_no_steps(
    stack: Stack, tiny_model_dir: Path, reference: ExperimentResult
) -> None:
    """Fault 2: SIGTERM on the busy training worker."""
    busy, idle, background = run_on_two_training_workers(
        stack, tiny_model_dir, "drained", heartbeat_timeout_s=30, spec=_spec(tiny_model_dir, "drained")
    )
    terminated_at = time.monotonic()
    assert busy.terminate(timeout_s=60) == 0  # graceful: checkpoint at the next step, then exit
    [run] = background.result(timeout_s=300).runs
    # The terminated attempt's last checkpoint, from the run's journal: by the time the old process has
    # exited, the next attempt may already have published newer ones.
    events = [
        json.loads(line) for line in (stack.runs_dir / "runs" / "drained" / "events.jsonl").read_text().splitlines()
    ]
    second_attempt = next(i for i, e in enumerate(events) if e["event"] == "attempt" and e.get("attempt") == 2)
    step_at_shutdown = [e["step"] for e in events[:second_attempt] if e["event"] == "checkpoint"][-1]
    _assert_same_as_reference(run, reference)
    [resume] = _resume_events(stack.runs_dir, "drained")
    assert resume["from_step"] == step_at_shutdown and resume["steps_lost"] == 0
    assert idle.holds_training
    print(
        f"\nfault 2 (SIGTERM): final checkpoint at step {step_at_shutdown}, steps lost {resume['steps_lost']}, "
        f"recovery {resume['recovery_seconds']:.1f}s, attempt {resume['attempt']}, "
        f"{time.monotonic() - terminated_at:.1f}s from SIGTERM to completion"
    )


def test_eval_worker_killed_mid_evaluation_gives_the_same_numbers(
    stack: Stack, tiny_model_dir: Path, reference: ExperimentResult
) -> None:
    """Fault 5: SIGKILL the eval worker while it evaluates; a new one evaluates again, same metrics."""
    eval_worker, _ = stack.start_workers("eval", "training")
    background = stack.run_in_background(
        {"experiment_id": "eval-killed", "runs": [_spec(tiny_model_dir, "eval-killed")]}, heartbeat_timeout_s=3
    )
    deadline = time.monotonic() + 300
    while '"evaluation started"' not in eval_worker.log_file.read_text():
        assert time.monotonic() < deadline, "evaluation never started"
        time.sleep(0.02)
    killed_at = time.monotonic()
    eval_worker.kill()
    stack.start_worker("eval")
    [run] = background.result(timeout_s=300).runs
    _assert_same_as_reference(run, reference)
    attempts = asyncio.run(_attempts(stack, "eval-eval-killed-validation", "evaluate_model"))
    assert attempts[-1] >= 2, attempts
    print(
        f"\nfault 5 (eval worker SIGKILL): evaluate attempts {attempts}, "
        f"{time.monotonic() - killed_at:.1f}s from kill to result"
    )


async def _attempts(stack: Stack, workflow_id: str, activity_type: str) -> list[int]:
    return await activity_attempts(await stack.client(), workflow_id, activity_type)


def test_temporal_server_killed_and_restarted_mid_experiment(
    tmp_path: Path, data_dir: Path, tiny_model_dir: Path, reference: ExperimentResult
) -> None:
    """Fault 6: SIGKILL the server mid-training, restart it on its state file: the experiment completes."""
    stack = Stack.start(tmp_path, data_dir, db_file=tmp_path / "temporal.db")
    try:
        stack.start_workers("eval", "training")
        experiment = parse_experiment(
            {"experiment_id": "server-killed", "runs": [_spec(tiny_model_dir, "server-killed")]}
        )

        async def submit() -> None:
            await start_experiment(await stack.client(), experiment, stack.settings(heartbeat_timeout_s=5))

        asyncio.run(submit())
        wait_for_checkpoint(stack.runs_dir, "server-killed")
        stack.kill_server()
        down_at = time.monotonic()
        time.sleep(2)
        stack.start_server()
        result = asyncio.run(result_across_outages(stack, "experiment-server-killed", timeout_s=400))
        [run] = result.runs
        _assert_same_as_reference(run, reference)
        print(
            f"\nfault 6 (server SIGKILL + restart): "
            f"experiment completed {time.monotonic() - down_at:.1f}s after the kill, "
            f"resumes {run.training.resumes}"
        )
    finally:
        stack.close()


def _training_now(worker) -> str | None:
    """The run whose fine-tune this live worker is in, per its log (None: idle, or its last one ended)."""
    if worker.process.poll() is not None:
        return None
    current = None
    for line in worker.log_file.read_text().splitlines():
        if '"fine-tune started"' in line:
            current = json.loads(line)["run_id"]
        elif current and ('"fine-tune finished"' in line or '"attempt failed"' in line):
            current = None
    return current


def _newest_checkpoint(stack: Stack, run_id: str) -> int:
    latest = CheckpointStore(stack.runs_dir / "runs" / run_id / "checkpoints").latest_complete()
    return latest.step if latest is not None else 0


def test_soak_four_runs_survive_twenty_kills_with_identical_metrics(
    stack: Stack, tiny_model_dir: Path, reference: ExperimentResult
) -> None:
    """Fault 7: a 4-run experiment; the busy training worker is SIGKILLed 20 times: every other kill at
    a random moment (loading, training, saving), the others right after a run wrote a checkpoint it
    had not been killed at before, mid-training, so those runs must resume from that checkpoint."""
    rng = random.Random(9)
    pace = {"step_pace_s": 0.02}  # >= 5 s of training per run on any machine: kills land mid-training
    evaluator = stack.start_worker("eval", wait=False)
    workers = stack.start_workers("training", "training", **pace)
    evaluator.wait_ready()
    run_ids = [f"soak-{i}" for i in range(4)]
    background = stack.run_in_background(
        {"experiment_id": "soak", "runs": [_spec(tiny_model_dir, run_id) for run_id in run_ids]}, heartbeat_timeout_s=2
    )
    killed_at: dict[str, int] = {}  # run -> the checkpoint step of its last checkpoint-gated kill
    must_resume: list[tuple[str, int]] = []
    kills, started = 0, time.monotonic()
    while kills < 20 and time.monotonic() - started < 900:
        victim = None
        if kills % 2 == 0:
            time.sleep(rng.uniform(0.5, 4.0))
            busy = [w for w in workers if w.process.poll() is None and w.holds_training]
            victim = rng.choice(busy) if busy else None
        else:
            # A checkpoint past the last gated kill, and at least 40 steps before the end (250 steps).
            deadline = time.monotonic() + 120
            while victim is None and time.monotonic() < deadline and background.running:
                for worker in workers:
                    run_id = _training_now(worker)
                    step = _newest_checkpoint(stack, run_id) if run_id else 0
                    if run_id and killed_at.get(run_id, 0) < step <= 200:
                        victim, killed_at[run_id] = worker, step
                        must_resume.append((run_id, step))
                        break
                else:
                    time.sleep(0.05)
        if victim is None:
            if not background.running:
                break
            continue
        victim.kill()
        kills += 1
        workers.remove(victim)
        workers.append(stack.start_worker("training", wait=False, **pace))
    result = background.result(timeout_s=900)
    assert kills == 20, f"only {kills} kills landed before the experiment finished"
    for run in result.runs:
        _assert_same_as_reference(run, reference)
        for checkpoint in (stack.runs_dir / "runs" / run.run_id / "checkpoints").glob("checkpoint-*"):
            assert (checkpoint / CHECKPOINT_MANIFEST).is_file(), f"{checkpoint} has no manifest"
            json.loads((checkpoint / CHECKPOINT_MANIFEST).read_text())
    resumed_from = {run_id: [e["from_step"] or 0 for e in _resume_events(stack.runs_dir, run_id)] for run_id in run_ids}
    assert len(must_resume) == 10
    for run_id, step in must_resume:  # each gated kill lost at most the steps since that checkpoint
        assert any(from_step >= step for from_step in resumed_from[run_id]), (run_id, step, resumed_from[run_id])
    resumes = {run.run_id: run.training.resumes for run in result.runs}
    lost = [e["steps_lost"] for run_id in run_ids for e in _resume_events(stack.runs_dir, run_id)]
    recovery = [
        e["recovery_seconds"]
        for run_id in run_ids
        for e in _resume_events(stack.runs_dir, run_id)
        if e["recovery_seconds"] >= 0
    ]
    print(
        f"\nfault 7 (soak): {kills} kills (10 right after a checkpoint), "
        f"4/4 completed in {time.monotonic() - started:.0f}s, "
        f"resumes {resumes}, resumed from checkpoints {resumed_from}, "
        f"steps lost max {max(lost, default=0)} total {sum(lost)}, recovery max {max(recovery, default=0):.1f}s"
    )


def test_two_submissions_of_one_run_at_the_same_moment_have_one_writer(served: Stack, tiny_model_dir: Path) -> None:
    """Fault 9: two experiments with the same run id, submitted concurrently: one trains, one is told."""
    run = tiny_run(tiny_model_dir, "contested")
    experiments = [
        parse_experiment({"experiment_id": name, "runs": [run]}) for name in ("first-submitter", "second-submitter")
    ]

    async def both() -> list[ExperimentResult]:
        client = await served.client()
        handles = await asyncio.gather(*(start_experiment(client, e, served.settings()) for e in experiments))
        return await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), timeout=300)

    results = asyncio.run(both())
    outcomes = sorted((r.runs[0].status, r.runs[0].error or "") for r in results)
    completed = [o for o in outcomes if o[0] == "completed"]
    refused = [o for o in outcomes if o[0] == "failed"]
    # One training workflow id per run: whichever started second is refused (or, if the first had
    # already finished, reuses its results); never two writers.
    assert len(completed) >= 1
    assert all("already being processed by another submission" in error for _, error in refused)
    starts = asyncio.run(_attempts(served, training_workflow_id("contested"), "fine_tune"))
    assert starts == [1]
    journal = [
        json.loads(line) for line in (served.runs_dir / "runs" / "contested" / "events.jsonl").read_text().splitlines()
    ]
    assert [e["attempt"] for e in journal if e["event"] == "attempt"] == [1]  # one writer, once
    print(f"\nfault 9 (concurrent submissions): outcomes {[o[0] for o in outcomes]}, fine_tune attempts {starts}")
