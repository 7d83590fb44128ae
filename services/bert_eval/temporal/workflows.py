"""Workflows: orchestration only (no I/O). Deterministic; every side effect is an activity."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():
    from bert_eval.telemetry import run_baggage
    from pydantic import ValidationError
    from bert_eval.experiment import describe_validation_error
    from bert_eval.reference import (
        BertEvalResult,
        ReferenceInputError,
        ReferenceRun,
        is_reference_input,
        parse_reference_input,
        reference_result,
    )
    from bert_eval.settings import EVAL_TASK_QUEUE, TRAINING_TASK_QUEUE
    from bert_eval.types import (
        CoordinatorInput,
        CoordinatorStatus,
        EvalResult,
        EvalRunInput,
        ExistingRun,
        Experiment,
        ExperimentResult,
        PredictInput,
        PredictResult,
        RunPhase,
        RunResult,
        RunSpec,
        RunStatus,
        SnapshotInput,
        SnapshotResult,
        TrainingInput,
        TrainingProgress,
        TrainingResult,
        TrainingSummary,
    )

__all__ = [
    "COORDINATOR_WORKFLOW_TYPE",
    "CoordinatorWorkflow",
    "EVAL_WORKFLOW_TYPE",
    "EvalWorkflow",
    "EXPERIMENT_ID",
    "PREDICT_WORKFLOW_TYPE",
    "PredictWorkflow",
    "RUN_ID",
    "TRAINING_WORKFLOW_TYPE",
    "TrainingWorkflow",
    "coordinator_workflow_id",
    "eval_workflow_id",
    "predict_workflow_id",
    "training_workflow_id",
]

# Workflow type names on the wire: the reference design's, so its clients start bert-eval's workflows by name.
COORDINATOR_WORKFLOW_TYPE = "CoordinatorWorkflow"
TRAINING_WORKFLOW_TYPE = "CheckpointedBertTrainingWorkflow"
EVAL_WORKFLOW_TYPE = "BertEvalWorkflow"
PREDICT_WORKFLOW_TYPE = "PredictWorkflow"

# "RunId" is Temporal's own system attribute (the execution run id), hence the prefix.
RUN_ID = SearchAttributeKey.for_keyword("BertRunId")
EXPERIMENT_ID = SearchAttributeKey.for_keyword("BertExperimentId")
INVALID_INPUT = "InvalidInput"

_SHORT_RETRY = RetryPolicy(maximum_attempts=3, non_retryable_error_types=[INVALID_INPUT])


def coordinator_workflow_id(experiment_id: str) -> str:
    return f"experiment-{experiment_id}"


def training_workflow_id(run_id: str) -> str:
    return f"train-{run_id}"


def eval_workflow_id(run_id: str, split: str) -> str:
    return f"eval-{run_id}-{split}"


def predict_workflow_id(run_id: str, request_id: str) -> str:
    return f"predict-{run_id}-{request_id}"


@workflow.defn(name=TRAINING_WORKFLOW_TYPE)
class TrainingWorkflow:
    """Snapshot the run's data (CPU pool), then fine-tune with checkpoints (GPU pool)."""

    def __init__(self) -> None:
        self._progress: TrainingProgress | None = None

    @workflow.run
    async def run(self, request: TrainingInput) -> TrainingResult:
        run = request.run
        self._progress = TrainingProgress(run_id=run.id, phase="snapshot")
        snapshot: SnapshotResult = await workflow.execute_activity(
            "snapshot_dataset",
            SnapshotInput.for_run(run),
            result_type=SnapshotResult,
            task_queue=EVAL_TASK_QUEUE,
            start_to_close_timeout=timedelta(hours=2),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=_SHORT_RETRY,
        )
        pinned = request.expected_snapshot_id
        if pinned is not None and snapshot.snapshot_id != pinned:
            raise ApplicationError(
                _snapshot_mismatch(run.id, pinned, snapshot.snapshot_id), type=INVALID_INPUT, non_retryable=True
            )
        self._progress = self._progress.model_copy(update={"phase": "loading"})
        summary: TrainingSummary = await workflow.execute_activity(
            "fine_tune",
            request.model_copy(update={"snapshot": snapshot}),
            result_type=TrainingSummary,
            task_queue=TRAINING_TASK_QUEUE,
            start_to_close_timeout=timedelta(days=7),
            # A killed worker stops heartbeating: its attempt times out and another worker resumes.
            heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout_s),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=30),
                maximum_attempts=request.max_attempts,
                non_retryable_error_types=[INVALID_INPUT],
            ),
        )
        self._progress = self._progress.model_copy(
            update={"phase": "completed", "step": summary.steps, "total_steps": summary.steps, "loss": summary.final_loss}
        )
        return TrainingResult(summary=summary, snapshot=snapshot)

    @workflow.signal(name="report_progress")
    def report_progress(self, progress: TrainingProgress) -> None:
        if self._progress is None or self._progress.phase != "completed":
            self._progress = progress

    @workflow.query
    def progress(self) -> TrainingProgress | None:
        return self._progress


@workflow.defn(name=EVAL_WORKFLOW_TYPE)
class EvalWorkflow:
    """Evaluate one trained model on one split (CPU pool)."""

    @workflow.run
    async def run(self, request: EvalRunInput) -> EvalResult:
        return await workflow.execute_activity(
            "evaluate_model",
            request,
            result_type=EvalResult,
            task_queue=EVAL_TASK_QUEUE,
            start_to_close_timeout=timedelta(hours=6),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=_SHORT_RETRY,
        )


@workflow.defn(name=COORDINATOR_WORKFLOW_TYPE)
class CoordinatorWorkflow:
    """Train every run at once, evaluate each as soon as its training ends, report one record per run."""

    def __init__(self) -> None:
        self._status: dict[str, RunStatus] = {}
        self._experiment_id = ""
        self._snapshot_pins: dict[str, str] = {}  # run_id -> snapshot id the reference input pinned

    # The input is decoded here, not by the data converter, so that invalid input fails the workflow with a
    # message naming the field instead of failing its workflow task over and over.
    @workflow.run
    async def run(self, payload: Any) -> Any:
        """bert-eval's CoordinatorInput -> ExperimentResult; the reference's {"configs": [...]} -> list[BertEvalResult]."""
        if is_reference_input(payload):
            try:
                runs = parse_reference_input(payload)
            except ReferenceInputError as exc:
                raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
            return await self._run_reference(runs)
        try:
            request = CoordinatorInput.model_validate(payload)
        except ValidationError as exc:
            raise ApplicationError(
                f"invalid CoordinatorWorkflow input: {describe_validation_error(exc)} (expected bert-eval's "
                '{"experiment": {...}} or the reference design\'s {"configs": [...]})',
                type=INVALID_INPUT,
                non_retryable=True,
            ) from None
        return await self._run_experiment(request)

    async def _run_reference(self, runs: list[ReferenceRun]) -> list[BertEvalResult]:
        self._snapshot_pins = {run.spec.id: run.snapshot_id for run in runs if run.snapshot_id is not None}
        try:
            experiment = Experiment(runs=tuple(run.spec for run in runs)).canonical()
        except ValueError as exc:
            raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
        outcome = await self._run_experiment(CoordinatorInput(experiment=experiment))
        results, failures = [], []
        for run, record in zip(runs, outcome.runs):
            if record.status == "completed" and record.evaluation is not None:
                results.append(reference_result(run, record.evaluation, reused=record.reused))
            else:
                error = record.error or "failed"
                failures.append(error if f"run {record.run_id}:" in error else f"run {record.run_id}: {error}")
        if failures:
            # The reference design fails the coordinator when a run fails; the other runs still finished
            # (their results are in the details, and on disk for reuse when the input is resubmitted).
            raise ApplicationError(
                f"{len(failures)} of {len(runs)} runs failed: " + "; ".join(failures),
                [r.model_dump(mode="json") for r in results],
                type="RunsFailed",
                non_retryable=True,
            )
        return results

    async def _run_experiment(self, request: CoordinatorInput) -> ExperimentResult:
        experiment = request.experiment.canonical()
        self._experiment_id = experiment.id
        self._status = {run.id: RunStatus(run_id=run.id) for run in experiment.runs}
        await workflow.execute_activity(
            "record_experiment",
            experiment,
            task_queue=EVAL_TASK_QUEUE,
            start_to_close_timeout=timedelta(minutes=2),
            retry_policy=_SHORT_RETRY,
        )
        results = await asyncio.gather(*(self._run_one(experiment.id, run, request) for run in experiment.runs))
        return ExperimentResult(experiment_id=experiment.id, runs=list(results))

    @workflow.query
    def status(self) -> CoordinatorStatus:
        return CoordinatorStatus(experiment_id=self._experiment_id, runs=list(self._status.values()))

    async def _run_one(self, experiment_id: str, run: RunSpec, request: CoordinatorInput) -> RunResult:
        # Everything this run starts (children, activities) and their spans carry its run_id.
        with run_baggage(run_id=run.id, experiment_id=experiment_id):
            return await self._run_one_traced(experiment_id, run, request)

    async def _run_one_traced(self, experiment_id: str, run: RunSpec, request: CoordinatorInput) -> RunResult:
        status = self._status[run.id]
        try:
            existing: ExistingRun = await workflow.execute_activity(
                "find_existing_run",
                run,
                result_type=ExistingRun,
                task_queue=EVAL_TASK_QUEUE,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=_SHORT_RETRY,
            )
            pinned = self._snapshot_pins.get(run.id)
            if existing.summary is not None and existing.snapshot is not None:
                if pinned is not None and existing.snapshot.snapshot_id != pinned:
                    return self._failed(run.id, _snapshot_mismatch(run.id, pinned, existing.snapshot.snapshot_id))
                training = TrainingResult(summary=existing.summary, snapshot=existing.snapshot, reused=True)
            else:
                status.phase = RunPhase.training
                training = await workflow.execute_child_workflow(
                    TrainingWorkflow.run,
                    TrainingInput(
                        experiment_id=experiment_id,
                        run=run,
                        heartbeat_timeout_s=request.heartbeat_timeout_s,
                        max_attempts=request.max_training_attempts,
                        expected_snapshot_id=pinned,
                    ),
                    id=training_workflow_id(run.id),
                    task_queue=TRAINING_TASK_QUEUE,
                    search_attributes=_run_attributes(experiment_id, run.id),
                )
            evaluation = existing.evaluation
            if evaluation is None:
                status.phase = RunPhase.evaluating
                evaluation = await workflow.execute_child_workflow(
                    EvalWorkflow.run,
                    EvalRunInput(
                        experiment_id=experiment_id,
                        run_id=run.id,
                        model_dir=training.summary.model_dir,
                        snapshot=training.snapshot,
                        request=run.eval,
                    ),
                    id=eval_workflow_id(run.id, run.eval.split),
                    task_queue=EVAL_TASK_QUEUE,
                    search_attributes=_run_attributes(experiment_id, run.id),
                )
        except WorkflowAlreadyStartedError as exc:
            return self._failed(
                run.id,
                f"run {run.id} is already being processed by another submission (workflow {exc.workflow_id}); "
                "wait for it to finish, then resubmit to reuse its results, or choose another run_id",
            )
        except (ActivityError, ChildWorkflowError, ApplicationError) as exc:
            return self._failed(run.id, _root_cause(exc))
        reused = existing.summary is not None and existing.evaluation is not None
        status.phase, status.reused, status.metrics = RunPhase.completed, reused, evaluation.metrics
        return RunResult(
            run_id=run.id,
            status="completed",
            reused=reused,
            training=training.summary,
            evaluation=evaluation,
            metrics=evaluation.metrics,
        )


    def _failed(self, run_id: str, error: str) -> RunResult:
        status = self._status[run_id]
        status.phase, status.error = RunPhase.failed, error
        workflow.logger.warning("run %s failed: %s", run_id, error)
        return RunResult(run_id=run_id, status="failed", error=error)


@workflow.defn(name=PREDICT_WORKFLOW_TYPE)
class PredictWorkflow:
    """Label texts with a trained run's final model (eval pool)."""

    @workflow.run
    async def run(self, request: PredictInput) -> PredictResult:
        return await workflow.execute_activity(
            "predict",
            request,
            result_type=PredictResult,
            task_queue=EVAL_TASK_QUEUE,
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=_SHORT_RETRY,
        )


def _snapshot_mismatch(run_id: str, pinned: str, actual: str) -> str:
    return (
        f"run {run_id}: dataset_snapshot pins snapshot {pinned}, but the run's data selection gives snapshot "
        f"{actual}; the dataset or selection (max_train_samples, max_eval_samples, split, seed) differs from the "
        "pinned one. Restore them, or drop dataset_snapshot"
    )


def _run_attributes(experiment_id: str, run_id: str) -> TypedSearchAttributes:
    return TypedSearchAttributes([SearchAttributePair(RUN_ID, run_id), SearchAttributePair(EXPERIMENT_ID, experiment_id)])


def _root_cause(exc: BaseException) -> str:
    """The innermost failure's message: what actually went wrong, not the wrapping layers."""
    message = str(exc)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, FailureError) and not isinstance(cause, (ActivityError, ChildWorkflowError)) and str(cause):
            message = str(cause)
        cause = cause.__cause__
    return message
