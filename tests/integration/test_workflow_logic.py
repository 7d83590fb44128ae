"""Workflow logic in seconds: the real workflows on one shared dev server, in-process workers on a fresh
task queue per test, and mocked activities (no training, no files)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import yaml
from support.harness import create_namespace
from support.specs import tiny_run
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.worker import Worker

from bert_eval.core.data.snapshot import SnapshotInput
from bert_eval.core.errors import DeterministicFailure, InvalidInputError, TransientError
from bert_eval.core.records import (
    DatasetSchema,
    EvalResult,
    ExperimentSummary,
    SnapshotResult,
    TrainingProgress,
    TrainingSummary,
)
from bert_eval.experiment import parse_experiment
from bert_eval.settings import TemporalSettings
from bert_eval.spec import Experiment, RunSpec, TaskType
from bert_eval.temporal.activities import FineTuneInput, _activity_scope
from bert_eval.temporal.client import connect
from bert_eval.temporal.names import ACTIVITY, WORKFLOW, coordinator_workflow_id, training_workflow_id
from bert_eval.temporal.payloads import CoordinatorInput, EvalRunInput, ExistingRun, ExperimentResult, SummaryInput
from bert_eval.temporal.submit import missing_workers, training_progress
from bert_eval.temporal.workflows import BertEvalWorkflow, CheckpointedBertTrainingWorkflow, CoordinatorWorkflow

pytestmark = pytest.mark.integration

SCHEMA = DatasetSchema(
    text_columns=("sentence",), label_column="label", task=TaskType.classification, label_names=("0", "1")
)


def _snapshot(run_id: str) -> SnapshotResult:
    return SnapshotResult(
        snapshot_id=f"snap-{run_id}",
        path=f"/snapshots/{run_id}",
        dataset_schema=SCHEMA,
        splits={"train": 8, "validation": 4},
    )


def _summary(run_id: str) -> TrainingSummary:
    return TrainingSummary(
        run_id=run_id,
        model="tiny",
        final_loss=0.5,
        steps=10,
        epochs=1.0,
        checkpoints_saved=2,
        resumes=0,
        wall_time_s=1.0,
        train_samples=8,
        dataset_schema=SCHEMA,
        model_dir=f"/runs/{run_id}/model",
        snapshot_id=f"snap-{run_id}",
    )


def _evaluation(run_id: str) -> EvalResult:
    return EvalResult(
        run_id=run_id, split="validation", examples=4, metrics={"accuracy": 0.75}, duration_s=0.1, path="/x"
    )


class Mocks:
    """Activities with the real names and types; `fine_tune_behaviour` decides what each run's training does."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.existing: dict[str, ExistingRun] = {}
        self.fine_tune_behaviour: dict[str, Callable[[int], None]] = {}
        self.release = asyncio.Event()
        self.block_training = False

    def activities(self) -> tuple[list, list]:
        @activity.defn(name=ACTIVITY.record_experiment)
        async def record_experiment(experiment: Experiment) -> None:
            self.calls[(ACTIVITY.record_experiment, experiment.id)] += 1

        @activity.defn(name=ACTIVITY.find_existing_run)
        async def find_existing_run(run: RunSpec) -> ExistingRun:
            self.calls[(ACTIVITY.find_existing_run, run.id)] += 1
            return self.existing.get(run.id, ExistingRun())

        @activity.defn(name=ACTIVITY.snapshot_dataset)
        async def snapshot_dataset(request: SnapshotInput) -> SnapshotResult:
            self.calls[(ACTIVITY.snapshot_dataset, request.run_id)] += 1
            return _snapshot(request.run_id)

        @activity.defn(name=ACTIVITY.evaluate_model)
        async def evaluate_model(request: EvalRunInput) -> EvalResult:
            self.calls[(ACTIVITY.evaluate_model, request.run_id)] += 1
            return _evaluation(request.run_id)

        @activity.defn(name=ACTIVITY.fine_tune)
        async def fine_tune(request: FineTuneInput) -> TrainingSummary:
            run_id = request.run.id
            self.calls[(ACTIVITY.fine_tune, run_id)] += 1
            with _activity_scope(run_id):  # the real mapping from core errors to retry decisions
                if (behave := self.fine_tune_behaviour.get(run_id)) is not None:
                    behave(self.calls[(ACTIVITY.fine_tune, run_id)])
                while self.block_training and not self.release.is_set():
                    activity.heartbeat(
                        TrainingProgress(run_id=run_id, phase="training", step=7, total_steps=10).model_dump(
                            mode="json"
                        )
                    )
                    await asyncio.sleep(0.2)
            return _summary(run_id)

        @activity.defn(name=ACTIVITY.summarize_experiment)
        async def summarize_experiment(request: SummaryInput) -> ExperimentSummary:
            self.calls[(ACTIVITY.summarize_experiment, request.experiment_id)] += 1
            return ExperimentSummary(split="validation", notes=[f"{len(request.runs)} completed runs"])

        return [record_experiment, find_existing_run, snapshot_dataset, evaluate_model, summarize_experiment], [
            fine_tune
        ]


@asynccontextmanager
async def workers(shared_server: str, mocks: Mocks) -> AsyncIterator[tuple[Client, str, str]]:
    """Both pools' workflows and the mocked activities, on fresh task queues."""
    client = await connect(TemporalSettings(address=shared_server))
    eval_queue, training_queue = f"eval-{uuid.uuid4()}", f"train-{uuid.uuid4()}"
    eval_activities, training_activities = mocks.activities()
    async with (
        Worker(
            client, task_queue=eval_queue, workflows=[CoordinatorWorkflow, BertEvalWorkflow], activities=eval_activities
        ),
        Worker(
            client,
            task_queue=training_queue,
            workflows=[CheckpointedBertTrainingWorkflow],
            activities=training_activities,
        ),
    ):
        yield client, eval_queue, training_queue


def _experiment(*run_ids: str) -> Experiment:
    suffix = uuid.uuid4().hex[:8]  # one shared server: ids must not collide across tests
    runs = [tiny_run(Path("/models/tiny"), f"{run_id}-{suffix}") for run_id in run_ids]
    return parse_experiment({"experiment_id": f"exp-{suffix}", "runs": runs})


async def _run(client: Client, experiment: Experiment, eval_queue: str, training_queue: str) -> ExperimentResult:
    handle = await client.start_workflow(
        CoordinatorWorkflow.run,
        CoordinatorInput(experiment=experiment, training_task_queue=training_queue),
        id=coordinator_workflow_id(experiment.id),
        task_queue=eval_queue,
        # The coordinator returns bert-eval's or the reference design's result shape, so its annotation is Any.
        result_type=ExperimentResult,
    )
    return await asyncio.wait_for(handle.result(), timeout=120)


def test_completed_runs_are_reused_without_training_or_evaluation(shared_server: str) -> None:
    mocks = Mocks()
    experiment = _experiment("done", "half-done")
    done, half = (run.id for run in experiment.runs)
    mocks.existing[done] = ExistingRun(summary=_summary(done), snapshot=_snapshot(done), evaluation=_evaluation(done))
    mocks.existing[half] = ExistingRun(summary=_summary(half), snapshot=_snapshot(half))  # trained, not evaluated

    async def go() -> ExperimentResult:
        async with workers(shared_server, mocks) as (client, eval_queue, training_queue):
            return await _run(client, experiment, eval_queue, training_queue)

    result = asyncio.run(go())
    by_id = {r.run_id: r for r in result.runs}
    assert by_id[done].status == "completed" and by_id[done].reused
    assert by_id[half].status == "completed" and not by_id[half].reused
    assert mocks.calls[(ACTIVITY.fine_tune, done)] == mocks.calls[(ACTIVITY.fine_tune, half)] == 0
    assert mocks.calls[(ACTIVITY.evaluate_model, done)] == 0 and mocks.calls[(ACTIVITY.evaluate_model, half)] == 1
    # The statistics are computed once, over both completed runs, and travel with the result.
    assert mocks.calls[(ACTIVITY.summarize_experiment, experiment.id)] == 1
    assert result.summary is not None and result.summary.notes == ["2 completed runs"]


def test_each_error_kind_gets_its_retry_rule_and_failures_stay_isolated(shared_server: str) -> None:
    mocks = Mocks()
    experiment = _experiment("good", "bad-input", "flaky", "deterministic")
    good, bad, flaky, deterministic = (run.id for run in experiment.runs)

    def invalid(call: int) -> None:
        raise InvalidInputError(f"run {bad}: label column 'label' has missing values")

    def outage_twice(call: int) -> None:
        if call <= 2:
            raise TransientError(f"run {flaky}: model hub unreachable")

    def always(call: int) -> None:
        raise DeterministicFailure(f"run {deterministic}: max_seq_length 1024 exceeds the model's 512 positions")

    mocks.fine_tune_behaviour.update({bad: invalid, flaky: outage_twice, deterministic: always})

    async def go() -> ExperimentResult:
        async with workers(shared_server, mocks) as (client, eval_queue, training_queue):
            return await _run(client, experiment, eval_queue, training_queue)

    result = asyncio.run(go())
    by_id = {r.run_id: r for r in result.runs}
    assert by_id[good].status == "completed" and by_id[good].metrics == {"accuracy": 0.75}
    # Bad input: once, and the run's record carries the root cause, not the wrapping layers.
    assert (
        by_id[bad].status == "failed"
        and by_id[bad].error == f"InvalidInput: run {bad}: label column 'label' has missing values"
    )
    assert mocks.calls[(ACTIVITY.fine_tune, bad)] == 1
    # Transient: retried with backoff until it succeeded.
    assert by_id[flaky].status == "completed" and mocks.calls[(ACTIVITY.fine_tune, flaky)] == 3
    # Deterministic: a bounded number of tries, then a failure that says so.
    assert by_id[deterministic].status == "failed" and mocks.calls[(ACTIVITY.fine_tune, deterministic)] == 3
    assert "exceeds the model's 512 positions" in by_id[deterministic].error and "3 times" in by_id[deterministic].error


def test_run_already_training_elsewhere_is_reported_and_progress_comes_from_heartbeats(shared_server: str) -> None:
    mocks = Mocks()
    mocks.block_training = True
    first = _experiment("shared")
    run_id = first.runs[0].id
    second = Experiment(experiment_id=f"{first.id}-again", runs=first.runs)

    async def go() -> tuple[ExperimentResult, ExperimentResult, TrainingProgress | None, int]:
        async with workers(shared_server, mocks) as (client, eval_queue, training_queue):
            original = asyncio.create_task(_run(client, first, eval_queue, training_queue))
            while mocks.calls[(ACTIVITY.fine_tune, run_id)] == 0:
                await asyncio.sleep(0.1)
            progress = None
            for _ in range(100):  # the first heartbeat reaches the server within the throttle interval
                if (progress := await training_progress(client, run_id)) is not None and progress.step == 7:
                    break
                await asyncio.sleep(0.2)
            duplicate = await _run(client, second, eval_queue, training_queue)
            mocks.release.set()
            result = await original
            events = len((await client.get_workflow_handle(training_workflow_id(run_id)).fetch_history()).events)
            return result, duplicate, progress, events

    original, duplicate, progress, events = asyncio.run(go())
    assert progress is not None and (progress.phase, progress.step, progress.total_steps) == ("training", 7, 10)
    [dup] = duplicate.runs
    assert dup.status == "failed"
    assert f"already being processed by another submission (workflow {training_workflow_id(run_id)})" in dup.error
    assert original.runs[0].status == "completed" and mocks.calls[(ACTIVITY.fine_tune, run_id)] == 1
    # Seconds of heartbeats add no history: progress is not signalled.
    assert events < 30


def test_a_payload_that_does_not_parse_fails_the_workflow_with_its_cause(shared_server: str) -> None:
    async def go() -> tuple[WorkflowFailureError, float]:
        async with workers(shared_server, Mocks()) as (client, eval_queue, _):
            started = time.monotonic()
            handle = await client.start_workflow(
                WORKFLOW.coordinator,
                {"experiments": "not what the coordinator takes"},
                id=f"bad-{uuid.uuid4()}",
                task_queue=eval_queue,
            )
            with pytest.raises(WorkflowFailureError) as failure:
                await asyncio.wait_for(handle.result(), timeout=60)
            return failure.value, time.monotonic() - started

    failure, seconds = asyncio.run(go())
    message = str(failure.cause)
    assert "invalid CoordinatorWorkflow input: experiment: Field required" in message
    assert "experiments: Extra inputs are not permitted" in message
    print(f"\nunparsable coordinator input: workflow failed after {seconds:.1f}s")


def test_an_invalid_experiment_fails_the_workflow_not_its_task(shared_server: str) -> None:
    experiment = _experiment("twin")
    # Built without validation, as another client could send it: two runs with one id.
    duplicated = Experiment.model_construct(experiment_id=experiment.id, runs=(experiment.runs[0], experiment.runs[0]))

    async def go() -> WorkflowFailureError:
        async with workers(shared_server, Mocks()) as (client, eval_queue, training_queue):
            with pytest.raises(WorkflowFailureError) as failure:
                await _run(client, duplicated, eval_queue, training_queue)
            return failure.value

    failure = asyncio.run(go())
    assert "run ids must be unique" in str(failure.cause)


def test_missing_workers_are_named_per_task_queue(shared_server: str) -> None:
    async def go() -> tuple[list[str], list[str]]:
        client = await connect(TemporalSettings(address=shared_server))
        nobody = await missing_workers(client, (f"empty-{uuid.uuid4()}",))
        async with workers(shared_server, Mocks()) as (client, eval_queue, training_queue):
            # A worker counts once its first poll has reached the server (a moment after it starts).
            deadline = time.monotonic() + 30
            while (
                served := await missing_workers(client, (eval_queue, training_queue))
            ) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
        return nobody, served

    nobody, served = asyncio.run(go())
    assert len(nobody) == 1 and "no worker polls task queue 'empty-" in nobody[0]
    assert served == []


def test_cli_says_within_seconds_that_no_worker_polls(shared_server: str, tmp_path: Path) -> None:
    """No worker at all on the default queues of a fresh namespace: `run` and `status` say so, promptly."""
    experiment = _experiment("unserved")
    spec = tmp_path / "experiment.yaml"
    spec.write_text(yaml.safe_dump(experiment.model_dump(mode="json", exclude_none=True)))
    namespace = create_namespace(shared_server, "unserved")
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": shared_server,
        "TEMPORAL_NAMESPACE": namespace,
        "BERT_EVAL_RUNS_DIR": str(tmp_path / "runs"),
    }
    cli = [sys.executable, "-m", "bert_eval"]

    queued = subprocess.run([*cli, "run", str(spec), "--no-wait"], env=env, capture_output=True, text=True, timeout=120)
    assert queued.returncode == 0, queued.stderr
    for queue in ("bert-eval-task-queue", "bert-training-task-queue"):
        assert f"no worker polls task queue '{queue}'" in queued.stderr

    started = time.monotonic()
    status = subprocess.run([*cli, "status", experiment.id], env=env, capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    assert "no worker polls task queue 'bert-eval-task-queue'" in status.stderr
    assert coordinator_workflow_id(experiment.id) in status.stdout
    print(f"\nstatus without workers answered in {time.monotonic() - started:.1f}s (process start included)")

    waiting = subprocess.Popen(
        [*cli, "run", str(spec)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        seen = ""
        for line in waiting.stderr:
            seen += line
            if "no worker polls task queue" in seen:
                break
        assert "no worker polls task queue 'bert-eval-task-queue'" in seen
    finally:
        waiting.kill()
        waiting.wait(timeout=30)


def test_cli_rejects_a_corrupt_spec_record_with_exit_2(tmp_path: Path) -> None:
    """A run directory whose spec.json is corrupt: a clear message, exit 2, nothing submitted."""
    experiment = _experiment("corrupt")
    run_id = experiment.runs[0].id
    run_dir = tmp_path / "runs" / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text('{"fingerprint": "trunc')
    (run_dir / "model").mkdir()
    spec = tmp_path / "experiment.yaml"
    spec.write_text(yaml.safe_dump(experiment.model_dump(mode="json", exclude_none=True)))
    env = {**os.environ, "TEMPORAL_ADDRESS": "127.0.0.1:1", "BERT_EVAL_RUNS_DIR": str(tmp_path / "runs")}
    rejected = subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(spec)], env=env, capture_output=True, text=True, timeout=120
    )
    assert rejected.returncode == 2, rejected.stderr
    message = " ".join(rejected.stderr.split())
    assert f"run {run_id}:" in message and "spec.json cannot be read" in message and "Nothing was submitted" in message
    assert "Traceback" not in rejected.stderr
