"""Workflows: orchestration only (no I/O). Deterministic; every side effect is an activity.

Changing what these workflows do changes their command sequence: follow docs/versioning.md
(`workflow.patched`, then record a new history under tests/replay/histories/).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    WorkflowAlreadyStartedError,
)

with workflow.unsafe.imports_passed_through():

    from bert_eval.core.asha import TrialState
    from bert_eval.core.errors import naming_run
    from bert_eval.core.records import (
        EvalResult,
        ExperimentSummary,
        ModelInfo,
        PredictResult,
        SnapshotResult,
        TrainingProgress,
        TrainingSummary,
    )
    from bert_eval.core.snapshot import SnapshotInput
    from bert_eval.reference_compat import (
        BertEvalRequest,
        BertEvalResult,
        CoordinatorWorkflowInput,
        ReferenceInputError,
        ReferenceRun,
        reference_evaluation,
        reference_result,
        to_run_specs,
    )
    from bert_eval.spec import RUN_MODEL_PREFIX, EvalRequest, Experiment, RunSpec
    from bert_eval.telemetry import run_baggage
    from bert_eval.temporal.activities import EvalActivities, FineTuneInput, TrainingActivities
    from bert_eval.temporal.calls import FAIL_WORKFLOW_ON, RETRY, activity_of_run, run_attributes, snapshot_of
    from bert_eval.temporal.failures import root_cause
    from bert_eval.temporal.names import (
        EXPERIMENT_ID,
        INVALID_INPUT,
        LEGACY_PROGRESS_SIGNAL,
        PATCH,
        QUERY,
        RUN_ID,
        TIMEOUTS,
        WORKFLOW,
        coordinator_workflow_id,
        eval_workflow_id,
        predict_workflow_id,
        release_prefix,
        training_workflow_id,
    )
    from bert_eval.temporal.payloads import (
        CellInput,
        CoordinatorInput,
        CoordinatorRequest,
        CoordinatorStatus,
        EvalRunInput,
        EvalWorkflowRequest,
        ExistingRun,
        ExperimentResult,
        MatrixCell,
        ModelSourceInput,
        PredictInput,
        RunPhase,
        RunResult,
        RunStatus,
        SearchState,
        SummaryInput,
        SummaryRun,
        TrainingInput,
        TrainingResult,
    )
    from bert_eval.temporal.search import SearchRunner

__all__ = [
    "CoordinatorWorkflow",
    "EvalWorkflow",
    "EXPERIMENT_ID",
    "LEGACY_WORKFLOWS",
    "PredictWorkflow",
    "RUN_ID",
    "TrainingWorkflow",
    "coordinator_workflow_id",
    "eval_workflow_id",
    "predict_workflow_id",
    "training_workflow_id",
]

T = TypeVar("T")

@workflow.defn(name=WORKFLOW.training, failure_exception_types=FAIL_WORKFLOW_ON)
class TrainingWorkflow:
    """Fine-tune one run with checkpoints (GPU pool) on the snapshot its input carries (taken first, on
    the eval pool, when the input has none).

    Live training progress is the fine-tune activity's heartbeat (clients read it with describe):
    no signals, so the history stays a few dozen events however long the run.
    """

    def __init__(self) -> None:
        self._progress: TrainingProgress | None = None

    @workflow.run
    async def run(self, request: TrainingInput) -> TrainingResult:
        run = request.run
        snapshot = request.snapshot
        if snapshot is None:
            self._progress = TrainingProgress(run_id=run.id, phase="snapshot")
            snapshot = await snapshot_of(run, heartbeat_timeout_s=request.heartbeat_timeout_s, task_queue=request.eval_task_queue)
        pinned = request.expected_snapshot_id
        if pinned is not None and snapshot.snapshot_id != pinned:
            raise ApplicationError(
                _snapshot_mismatch(run.id, pinned, snapshot.snapshot_id), type=INVALID_INPUT, non_retryable=True
            )
        self._progress = TrainingProgress(run_id=run.id, phase="loading")
        summary: TrainingSummary = await activity_of_run(
            run.id,
            TrainingActivities.fine_tune,
            FineTuneInput(experiment_id=request.experiment_id, run=run, snapshot=snapshot, stop_at_step=request.stop_at_step),
            start_to_close=TIMEOUTS.fine_tune_start_to_close,
            # A killed worker stops heartbeating: its attempt times out and another worker resumes.
            heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout_s),
        )
        self._progress = self._progress.model_copy(
            update={
                "phase": "paused" if summary.rung_checkpoint else "completed",
                "step": summary.steps,
                "total_steps": summary.steps,
                "loss": summary.final_loss,
            }
        )
        return TrainingResult(summary=summary, snapshot=snapshot)

    @workflow.signal(name=LEGACY_PROGRESS_SIGNAL)
    def report_progress(self, progress: TrainingProgress) -> None:
        """Kept so histories recorded before heartbeat-only progress still replay; nothing sends it now."""
        if self._progress is None or self._progress.phase != "completed":
            self._progress = progress

    @workflow.query(name=QUERY.progress)
    def progress(self) -> TrainingProgress | None:
        """The workflow's phase; step-level progress is in the fine-tune activity's heartbeat."""
        return self._progress


@workflow.defn(name=WORKFLOW.eval, failure_exception_types=FAIL_WORKFLOW_ON)
class EvalWorkflow:
    """Evaluate one trained model on one split (CPU pool): a run's model for the coordinator, or any model a
    reference-design client names in a `BertEvalRequest`."""

    @workflow.run
    async def run(self, request: EvalWorkflowRequest) -> EvalResult | BertEvalResult:
        if isinstance(request.root, BertEvalRequest):
            return await self._run_reference(request.root)
        return await self._evaluate_run(request.root)

    async def _evaluate_run(self, request: EvalRunInput) -> EvalResult:
        return await activity_of_run(
            request.run_id,
            EvalActivities.evaluate_model,
            request,
            start_to_close=TIMEOUTS.evaluate_start_to_close,
            heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout_s),
        )

    async def _run_reference(self, request: BertEvalRequest) -> BertEvalResult:
        """The model `model_path` (or `run_id`) names, evaluated as a cell of the evaluation matrix."""
        try:
            wanted = reference_evaluation(request)
        except ReferenceInputError as exc:
            raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
        label = wanted.run_id or "model-path"
        model: ModelInfo = await activity_of_run(
            label,
            EvalActivities.describe_model,
            ModelSourceInput(run_id=label, source=wanted.model_path, reference_path=True),
            start_to_close=TIMEOUTS.find_existing_start_to_close,
        )
        run_id = wanted.run_id or model.run_id or f"model-{model.digest[:10]}"
        snapshot: SnapshotResult = await activity_of_run(
            run_id,
            EvalActivities.snapshot_dataset,
            SnapshotInput.for_model(
                run_id=run_id, dataset=wanted.dataset, model=model, eval_split=wanted.request.split,
                max_eval_samples=wanted.request.max_eval_samples,
            ),
            start_to_close=TIMEOUTS.snapshot_start_to_close,
            heartbeat_timeout=TIMEOUTS.predict_heartbeat,
        )
        evaluation: EvalResult = await activity_of_run(
            run_id,
            EvalActivities.evaluate_cell,
            CellInput(experiment_id=workflow.info().workflow_id, run_id=run_id, model=model, snapshot=snapshot, request=wanted.request),
            start_to_close=TIMEOUTS.evaluate_start_to_close,
            heartbeat_timeout=TIMEOUTS.predict_heartbeat,
        )
        return reference_result(wanted, evaluation, reused=evaluation.reused)


@workflow.defn(name=WORKFLOW.coordinator, failure_exception_types=FAIL_WORKFLOW_ON)
class CoordinatorWorkflow:
    """Snapshot and train every run at once, evaluate each as soon as its training ends, report one record per run."""

    def __init__(self) -> None:
        self._status: dict[str, RunStatus] = {}
        self._experiment_id = ""
        self._snapshot_pins: dict[str, str] = {}  # run_id -> snapshot id the reference input pinned
        self._summary: ExperimentSummary | None = None
        self._search: SearchRunner | None = None

    @workflow.run
    async def run(self, request: CoordinatorRequest) -> ExperimentResult | list[BertEvalResult]:
        """bert-eval's CoordinatorInput -> ExperimentResult; the reference's {"configs": [...]} -> list[BertEvalResult]."""
        if isinstance(request.root, CoordinatorWorkflowInput):
            try:
                runs = to_run_specs(request.root)
            except ReferenceInputError as exc:
                raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
            return await self._run_reference(runs)
        return await self._run_experiment(request.root)

    async def _run_reference(self, runs: list[ReferenceRun]) -> list[BertEvalResult]:
        self._snapshot_pins = {run.spec.id: run.snapshot_id for run in runs if run.snapshot_id is not None}
        try:
            experiment = Experiment(runs=tuple(run.spec for run in runs)).canonical()
        except ValueError as exc:
            raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
        outcome = await self._run_experiment(CoordinatorInput(experiment=experiment))
        results, failures = [], []
        for run, record in zip(runs, outcome.runs, strict=True):
            if record.status == "completed" and record.evaluation is not None:
                results.append(reference_result(run, record.evaluation, reused=record.reused))
            else:
                failures.append(naming_run(record.run_id, record.error or "failed"))
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
        try:
            experiment = request.experiment.canonical()
        except ValueError as exc:
            # An invalid experiment fails the workflow with its cause (a plain exception would fail
            # the workflow task instead, retried forever while the client waits).
            raise ApplicationError(f"invalid experiment: {exc}", type=INVALID_INPUT, non_retryable=True) from None
        self._experiment_id = experiment.id
        if experiment.search is None:
            self._status = {run.id: RunStatus(run_id=run.id, config=run.config) for run in experiment.runs}
        if request.search_state is None:
            await workflow.execute_activity_method(
                EvalActivities.record_experiment,
                experiment,
                task_queue=workflow.info().task_queue,
                start_to_close_timeout=TIMEOUTS.record_experiment_start_to_close,
                retry_policy=RETRY,
            )
        if experiment.search is not None:
            return await self._run_search(experiment, request)
        results = await asyncio.gather(*(self._run_one(experiment.id, run, request) for run in experiment.runs))
        summary = None
        if workflow.patched(PATCH.experiment_summary):
            summary = await self._summarize(experiment, results)
        return ExperimentResult(experiment_id=experiment.id, runs=list(results), summary=summary)

    async def _run_search(self, experiment: Experiment, request: CoordinatorInput) -> ExperimentResult:
        """A search (temporal/search.py): one record per completed or failed trial, the leaderboard in `search`."""
        self._search = SearchRunner(experiment, request)
        outcome = await self._search.run()
        if isinstance(outcome, SearchState):
            workflow.continue_as_new(request.model_copy(update={"experiment": experiment, "search_state": outcome}))
        runs = [
            RunResult(run_id=t.run_id, status="completed", metrics=t.metrics or {})
            if t.state is TrialState.completed
            else RunResult(run_id=t.run_id, status="failed", error=t.error or "failed")
            for t in outcome.trials
            if t.state in (TrialState.completed, TrialState.failed)
        ]
        return ExperimentResult(experiment_id=experiment.id, runs=runs, search=outcome)

    async def _summarize(self, experiment: Experiment, results: list[RunResult]) -> ExperimentSummary | None:
        """Statistics over the completed runs; an experiment's results stand without them if they fail."""
        specs = {run.id: run for run in experiment.runs}
        completed = tuple(
            SummaryRun(
                run_id=r.run_id,
                config=specs[r.run_id].config_name,
                dataset=(specs[r.run_id].eval.dataset or specs[r.run_id].dataset).label,
                evaluation=r.evaluation,
                cells=tuple(r.cells),
            )
            for r in results
            if r.status == "completed" and r.evaluation is not None
        )
        if not completed:
            return None
        try:
            self._summary = await activity_of_run(
                experiment.id,
                EvalActivities.summarize_experiment,
                SummaryInput(experiment_id=experiment.id, runs=completed),
                start_to_close=TIMEOUTS.summarize_start_to_close,
            )
        except ActivityError as exc:
            workflow.logger.warning("experiment %s: no statistics: %s", experiment.id, root_cause(exc))
        return self._summary

    @workflow.query(name=QUERY.status)
    def status(self) -> CoordinatorStatus:
        search = self._search.outcome() if self._search is not None else None
        return CoordinatorStatus(experiment_id=self._experiment_id, runs=list(self._status.values()), summary=self._summary, search=search)

    async def _run_one(self, experiment_id: str, run: RunSpec, request: CoordinatorInput) -> RunResult:
        # Everything this run starts (children, activities) and their spans carry its run_id.
        with run_baggage(run_id=run.id, experiment_id=experiment_id):
            try:
                return await self._run_one_traced(experiment_id, run, request)
            except WorkflowAlreadyStartedError as exc:
                return self._failed(
                    run.id,
                    f"run {run.id} is already being processed by another submission (workflow {exc.workflow_id}); "
                    "wait for it to finish, then resubmit to reuse its results, or choose another run_id",
                )
            except (ActivityError, ChildWorkflowError, ApplicationError) as exc:
                return self._failed(run.id, root_cause(exc))

    async def _run_one_traced(self, experiment_id: str, run: RunSpec, request: CoordinatorInput) -> RunResult:
        status = self._status[run.id]
        if run.eval_only:
            source = self._status.get(run.model.removeprefix(RUN_MODEL_PREFIX)) if run.model.startswith(RUN_MODEL_PREFIX) else None
            if source is not None and source is not status:
                # The model is another run of this experiment: evaluate it once that run's training has ended.
                await workflow.wait_condition(lambda: source.phase in (RunPhase.evaluating, RunPhase.completed, RunPhase.failed))
                if source.phase is RunPhase.failed:
                    return self._failed(run.id, f"run {run.id}: its model is run {source.run_id}'s, and that run failed")
            status.phase = RunPhase.evaluating
            primary, *others = await self._cells(experiment_id, run, run.model, run.evaluations, request)
            status.phase, status.reused, status.metrics = RunPhase.completed, primary.evaluation.reused, primary.evaluation.metrics
            return RunResult(
                run_id=run.id,
                config=run.config,
                status="completed",
                reused=all(cell.evaluation.reused for cell in (primary, *others)),
                evaluation=primary.evaluation,
                cells=others,
                metrics=primary.evaluation.metrics,
            )
        existing: ExistingRun = await activity_of_run(
            run.id, EvalActivities.find_existing_run, run, start_to_close=TIMEOUTS.find_existing_start_to_close
        )
        pinned = self._snapshot_pins.get(run.id)
        if existing.summary is not None and existing.snapshot is not None:
            if pinned is not None and existing.snapshot.snapshot_id != pinned:
                return self._failed(run.id, _snapshot_mismatch(run.id, pinned, existing.snapshot.snapshot_id))
            training = TrainingResult(summary=existing.summary, snapshot=existing.snapshot, reused=True)
        else:
            status.phase = RunPhase.training
            snapshot = None
            # The data is snapshotted here, on this (eval) queue, before the training child starts; children
            # of coordinators started earlier take it themselves.
            if workflow.patched(PATCH.snapshot_in_coordinator):
                snapshot = await snapshot_of(run, heartbeat_timeout_s=request.heartbeat_timeout_s)
                if pinned is not None and snapshot.snapshot_id != pinned:
                    return self._failed(run.id, _snapshot_mismatch(run.id, pinned, snapshot.snapshot_id))
            training = await workflow.execute_child_workflow(
                _child_type(WORKFLOW.training, WORKFLOW.legacy_training),
                TrainingInput(
                    experiment_id=experiment_id,
                    run=run,
                    snapshot=snapshot,
                    heartbeat_timeout_s=request.heartbeat_timeout_s,
                    eval_task_queue=workflow.info().task_queue,
                    expected_snapshot_id=pinned,
                ),
                result_type=TrainingResult,
                id=training_workflow_id(run.id, prefix=release_prefix(workflow.info().task_queue)),
                task_queue=request.training_task_queue,
                search_attributes=run_attributes(experiment_id, run.id),
            )
        evaluation = existing.evaluation
        if evaluation is None:
            status.phase = RunPhase.evaluating
            evaluation = await workflow.execute_child_workflow(
                _child_type(WORKFLOW.eval, WORKFLOW.legacy_eval),
                EvalRunInput(
                    experiment_id=experiment_id,
                    run_id=run.id,
                    model_dir=training.summary.model_dir,
                    snapshot=training.snapshot,
                    request=run.eval,
                    heartbeat_timeout_s=request.heartbeat_timeout_s,
                ),
                result_type=EvalResult,
                id=eval_workflow_id(run.id, run.eval.split, prefix=release_prefix(workflow.info().task_queue)),
                task_queue=workflow.info().task_queue,
                search_attributes=run_attributes(experiment_id, run.id),
            )
        cells = await self._cells(experiment_id, run, RUN_MODEL_PREFIX + run.id, run.evals, request) if run.evals else []
        reused = existing.summary is not None and existing.evaluation is not None and all(c.evaluation.reused for c in cells)
        status.phase, status.reused, status.metrics = RunPhase.completed, reused, evaluation.metrics
        return RunResult(
            run_id=run.id,
            config=run.config,
            status="completed",
            reused=reused,
            training=training.summary,
            evaluation=evaluation,
            cells=cells,
            metrics=evaluation.metrics,
        )

    async def _cells(
        self, experiment_id: str, run: RunSpec, source: str, entries: Sequence[EvalRequest], request: CoordinatorInput
    ) -> list[MatrixCell]:
        """Evaluations of the model `source` names (evaluation-matrix cells), each on its own snapshot."""
        model: ModelInfo = await activity_of_run(
            run.id,
            EvalActivities.describe_model,
            ModelSourceInput(run_id=run.id, source=source),
            start_to_close=TIMEOUTS.find_existing_start_to_close,
        )
        heartbeat = timedelta(seconds=request.heartbeat_timeout_s)

        async def cell(entry: EvalRequest) -> MatrixCell:
            dataset = entry.dataset or run.dataset
            snapshot: SnapshotResult = await activity_of_run(
                run.id,
                EvalActivities.snapshot_dataset,
                SnapshotInput.for_model(
                    run_id=run.id, dataset=dataset, model=model, eval_split=entry.split, max_eval_samples=entry.max_eval_samples
                ),
                start_to_close=TIMEOUTS.snapshot_start_to_close,
                heartbeat_timeout=heartbeat,
            )
            evaluation: EvalResult = await activity_of_run(
                run.id,
                EvalActivities.evaluate_cell,
                CellInput(experiment_id=experiment_id, run_id=run.id, model=model, snapshot=snapshot, request=entry),
                start_to_close=TIMEOUTS.evaluate_start_to_close,
                heartbeat_timeout=heartbeat,
            )
            return MatrixCell(dataset=dataset.label, evaluation=evaluation)

        return list(await asyncio.gather(*(cell(entry) for entry in entries)))

    def _failed(self, run_id: str, error: str) -> RunResult:
        status = self._status[run_id]
        status.phase, status.error = RunPhase.failed, error
        workflow.logger.warning("run %s failed: %s", run_id, error)
        return RunResult(run_id=run_id, config=status.config, status="failed", error=error)


@workflow.defn(name=WORKFLOW.predict, failure_exception_types=FAIL_WORKFLOW_ON)
class PredictWorkflow:
    """Label texts with a trained run's final model (eval pool)."""

    @workflow.run
    async def run(self, request: PredictInput) -> PredictResult:
        return await workflow.execute_activity_method(
            EvalActivities.predict,
            request,
            task_queue=workflow.info().task_queue,
            start_to_close_timeout=TIMEOUTS.predict_start_to_close,
            heartbeat_timeout=TIMEOUTS.predict_heartbeat,
            retry_policy=RETRY,
        )


# The types the previous release registered its children under. Workers keep serving them, so child
# workflows started before an upgrade finish on the new workers, and recorded histories replay.
@workflow.defn(name=WORKFLOW.legacy_training, failure_exception_types=FAIL_WORKFLOW_ON)
class LegacyTrainingWorkflow(TrainingWorkflow):
    """`TrainingWorkflow` under its pre-reference-names type."""

    @workflow.run
    async def run(self, request: TrainingInput) -> TrainingResult:
        return await super().run(request)


@workflow.defn(name=WORKFLOW.legacy_eval, failure_exception_types=FAIL_WORKFLOW_ON)
class LegacyEvalWorkflow(EvalWorkflow):
    """`EvalWorkflow` under its pre-reference-names type."""

    @workflow.run
    async def run(self, request: EvalRunInput) -> EvalResult:  # type: ignore[override]  # the old type took only this
        return await self._evaluate_run(request)


LEGACY_WORKFLOWS = (LegacyTrainingWorkflow, LegacyEvalWorkflow)


def _child_type(current: str, legacy: str) -> str:
    """Children get the reference design's type names; a coordinator started before that change (its
    history has no marker) keeps starting the old ones, so its replay stays deterministic."""
    return current if workflow.patched(PATCH.reference_type_names) else legacy


def _snapshot_mismatch(run_id: str, pinned: str, actual: str) -> str:
    return (
        f"run {run_id}: dataset_snapshot pins snapshot {pinned}, but the run's data selection gives snapshot "
        f"{actual}; the dataset or selection (max_train_samples, max_eval_samples, split, seed) differs from the "
        "pinned one. Restore them, or drop dataset_snapshot"
    )
