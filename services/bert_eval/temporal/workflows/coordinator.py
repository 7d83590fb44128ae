"""`CoordinatorWorkflow`: an experiment from submission to one record per run.

What it takes (`CoordinatorRequest`):
- an experiment of runs (`CoordinatorInput`): every run's data is snapshotted and its training child started
  at once; each run is evaluated (its `eval` split, then any further evaluation-matrix cells) as soon as its
  own training ends; a run whose training and evaluation already exist on the runs volume is reused;
- eval-only runs (`model:` a directory or another run): evaluated without training, after the run they
  name (if it is in the same experiment) has finished training;
- a search (`search:` in the experiment): `SearchRunner` (temporal/search.py) samples and promotes trials
  with ASHA on checkpoints, continuing as new when its history grows;
- the reference design's `{"configs": [...]}`: the same runs, answered as a list of `BertEvalResult`.

An experiment with `tracking:` ends by logging its results to MLflow (an activity of its own, retried with
backoff while the server is away, never failing the experiment) and, with `register:`, registering its winner.

The `status` query reports each run's phase, the experiment's summary, the search's leaderboard and where
the MLflow logging stands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from bert_eval.core.data.snapshot import SnapshotInput
    from bert_eval.core.errors import naming_run
    from bert_eval.core.records import EvalResult, ExperimentSummary, ModelInfo, SnapshotResult
    from bert_eval.core.search.asha import TrialState
    from bert_eval.reference_compat import (
        BertEvalResult,
        CoordinatorWorkflowInput,
        ReferenceInputError,
        ReferenceRun,
        reference_result,
        to_run_specs,
    )
    from bert_eval.spec import RUN_MODEL_PREFIX, EvalRequest, Experiment, RunSpec
    from bert_eval.telemetry import run_baggage
    from bert_eval.temporal.activities import EvalActivities
    from bert_eval.temporal.calls import (
        FAIL_WORKFLOW_ON,
        RETRY,
        activity_of_run,
        run_attributes,
        snapshot_mismatch,
        snapshot_of,
    )
    from bert_eval.temporal.failures import root_cause
    from bert_eval.temporal.names import (
        INVALID_INPUT,
        PATCH,
        QUERY,
        TIMEOUTS,
        WORKFLOW,
        eval_workflow_id,
        release_prefix,
        training_workflow_id,
    )
    from bert_eval.temporal.payloads import (
        CellInput,
        CoordinatorInput,
        CoordinatorRequest,
        CoordinatorStatus,
        EvalRunInput,
        ExistingRun,
        ExperimentResult,
        MatrixCell,
        ModelSourceInput,
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
    from bert_eval.temporal.tracking_activities import RegisterInput, TrackingActivities, TrackingInput, TrackingResult

__all__ = ["CoordinatorWorkflow"]


class _RunFailed(Exception):
    """A run that cannot go on, with the message its record carries (caught in `_run_one`)."""


@workflow.defn(name=WORKFLOW.coordinator, failure_exception_types=FAIL_WORKFLOW_ON)
class CoordinatorWorkflow:
    """Snapshot and train every run at once, evaluate each as soon as its training ends, report one record per
    run; or run a search; or answer the reference design's configs (see the module docstring)."""

    def __init__(self) -> None:
        self._status: dict[str, RunStatus] = {}
        self._experiment_id = ""
        self._snapshot_pins: dict[str, str] = {}  # run_id -> snapshot id the reference input pinned
        self._summary: ExperimentSummary | None = None
        self._search: SearchRunner | None = None
        self._tracking: str | None = None

    @workflow.run
    async def run(self, request: CoordinatorRequest) -> ExperimentResult | list[BertEvalResult]:
        """bert-eval's CoordinatorInput -> ExperimentResult; the reference's {"configs": [...]} ->
        list[BertEvalResult]."""
        if isinstance(request.root, CoordinatorWorkflowInput):
            try:
                runs = to_run_specs(request.root)
            except ReferenceInputError as exc:
                raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
            return await self._run_reference(runs)
        return await self._run_experiment(request.root)

    # --- the three kinds of request -------------------------------------------------------------------------

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
        tracking = await self._track(experiment, request)
        return ExperimentResult(experiment_id=experiment.id, runs=list(results), summary=summary, tracking=tracking)

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
        tracking = await self._track(experiment, request)
        return ExperimentResult(experiment_id=experiment.id, runs=runs, search=outcome, tracking=tracking)

    # --- one run: evaluate only, or train (or reuse) then evaluate --------------------------------------------

    async def _run_one(self, experiment_id: str, run: RunSpec, request: CoordinatorInput) -> RunResult:
        # Everything this run starts (children, activities) and their spans carry its run_id.
        with run_baggage(run_id=run.id, experiment_id=experiment_id):
            try:
                if run.eval_only:
                    return await self._evaluate_only(experiment_id, run, request)
                existing: ExistingRun = await activity_of_run(
                    run.id, EvalActivities.find_existing_run, run, start_to_close=TIMEOUTS.find_existing_start_to_close
                )
                training = await self._train_or_reuse(experiment_id, run, request, existing)
                return await self._evaluate(experiment_id, run, request, existing, training)
            except _RunFailed as exc:
                return self._failed(run.id, str(exc))
            except WorkflowAlreadyStartedError as exc:
                return self._failed(
                    run.id,
                    f"run {run.id} is already being processed by another submission (workflow {exc.workflow_id}); "
                    "wait for it to finish, then resubmit to reuse its results, or choose another run_id",
                )
            except (ActivityError, ChildWorkflowError, ApplicationError) as exc:
                return self._failed(run.id, root_cause(exc))

    async def _evaluate_only(self, experiment_id: str, run: RunSpec, request: CoordinatorInput) -> RunResult:
        """A run without training: its model's evaluation cells, once the run it names (if any) has trained."""
        status = self._status[run.id]
        source = (
            self._status.get(run.model.removeprefix(RUN_MODEL_PREFIX))
            if run.model.startswith(RUN_MODEL_PREFIX)
            else None
        )
        if source is not None and source is not status:
            # The model is another run of this experiment: evaluate it once that run's training has ended.
            await workflow.wait_condition(
                lambda: source.phase in (RunPhase.evaluating, RunPhase.completed, RunPhase.failed)
            )
            if source.phase is RunPhase.failed:
                raise _RunFailed(f"run {run.id}: its model is run {source.run_id}'s, and that run failed")
        status.phase = RunPhase.evaluating
        primary, *others = await self._cells(experiment_id, run, run.model, run.evaluations, request)
        status.phase, status.reused, status.metrics = (
            RunPhase.completed,
            primary.evaluation.reused,
            primary.evaluation.metrics,
        )
        return RunResult(
            run_id=run.id,
            config=run.config,
            status="completed",
            reused=all(cell.evaluation.reused for cell in (primary, *others)),
            evaluation=primary.evaluation,
            cells=others,
            metrics=primary.evaluation.metrics,
            evaluated_again=primary.evaluation.evaluated_again,
        )

    async def _train_or_reuse(
        self, experiment_id: str, run: RunSpec, request: CoordinatorInput, existing: ExistingRun
    ) -> TrainingResult:
        """The run's finished training from the runs volume, or a training child on the GPU pool."""
        pinned = self._snapshot_pins.get(run.id)
        if existing.summary is not None and existing.snapshot is not None:
            if pinned is not None and existing.snapshot.snapshot_id != pinned:
                raise _RunFailed(snapshot_mismatch(run.id, pinned, existing.snapshot.snapshot_id))
            return TrainingResult(summary=existing.summary, snapshot=existing.snapshot, reused=True)
        self._status[run.id].phase = RunPhase.training
        snapshot = None
        # The data is snapshotted here, on this (eval) queue, before the training child starts; children
        # of coordinators started earlier take it themselves.
        if _snapshot_in_coordinator():
            snapshot = await snapshot_of(run, heartbeat_timeout_s=request.heartbeat_timeout_s)
            if pinned is not None and snapshot.snapshot_id != pinned:
                raise _RunFailed(snapshot_mismatch(run.id, pinned, snapshot.snapshot_id))
        return await workflow.execute_child_workflow(
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

    async def _evaluate(
        self,
        experiment_id: str,
        run: RunSpec,
        request: CoordinatorInput,
        existing: ExistingRun,
        training: TrainingResult,
    ) -> RunResult:
        """The run's own evaluation (reused when it exists), then its further evaluation-matrix cells."""
        status = self._status[run.id]
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
                    request=run.primary_eval,
                    heartbeat_timeout_s=request.heartbeat_timeout_s,
                ),
                result_type=EvalResult,
                id=eval_workflow_id(run.id, run.primary_eval.split, prefix=release_prefix(workflow.info().task_queue)),
                task_queue=workflow.info().task_queue,
                search_attributes=run_attributes(experiment_id, run.id),
            )
        cells: list[MatrixCell] = []
        if run.extra_evals:
            cells = await self._cells(experiment_id, run, RUN_MODEL_PREFIX + run.id, run.extra_evals, request)
        reused = (
            existing.summary is not None and existing.evaluation is not None and all(c.evaluation.reused for c in cells)
        )
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
            evaluated_again=existing.evaluated_again,
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
                    run_id=run.id,
                    dataset=dataset,
                    model=model,
                    eval_split=entry.split,
                    max_eval_samples=entry.max_eval_samples,
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

    # --- finish ---------------------------------------------------------------------------------------------

    async def _summarize(self, experiment: Experiment, results: list[RunResult]) -> ExperimentSummary | None:
        """Statistics over the completed runs; an experiment's results stand without them if they fail."""
        specs = {run.id: run for run in experiment.runs}
        completed = tuple(
            SummaryRun(
                run_id=r.run_id,
                config=specs[r.run_id].config_name,
                dataset=(specs[r.run_id].primary_eval.dataset or specs[r.run_id].dataset).label,
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

    async def _track(self, experiment: Experiment, request: CoordinatorInput) -> str | None:
        """Log the results to MLflow (and register the winner), retrying with backoff while the server is away,
        for at most TIMEOUTS.tracking_schedule_to_close; the experiment's results stand whatever happens."""
        if experiment.tracking is None or not workflow.patched(PATCH.mlflow_tracking):
            return None
        mlflow = experiment.tracking.mlflow
        target = TrackingInput(experiment_id=experiment.id, uri=mlflow.uri, mlflow_experiment=mlflow.experiment)
        self._tracking = f"logging to MLflow at {mlflow.uri or 'MLFLOW_TRACKING_URI'}"
        logged = await self._with_backoff(
            TrackingActivities.log_to_mlflow, target, heartbeat=timedelta(seconds=request.heartbeat_timeout_s)
        )
        if not isinstance(logged, TrackingResult):
            self._tracking = (
                f"not logged to MLflow: {logged}; the results are on the runs volume: resubmit the experiment once the "
                "tracking server is back to log them"
            )
            return self._tracking
        self._tracking = (
            f"logged to MLflow at {logged.uri}: experiment {logged.mlflow_experiment_id}, "
            f"parent run {logged.parent_run_id}, {len(logged.runs)} runs"
        )
        if experiment.registry is not None:
            registration = RegisterInput(
                experiment_id=experiment.id,
                uri=logged.uri,
                runs=logged.runs,
                name=experiment.registry.mlflow.name,
                alias=experiment.registry.mlflow.alias,
                split=experiment.runs[0].primary_eval.split,
            )
            heartbeat = timedelta(seconds=request.heartbeat_timeout_s)
            registered = await self._with_backoff(
                TrackingActivities.register_in_mlflow, registration, heartbeat=heartbeat
            )
            outcome = f"not registered: {registered}" if isinstance(registered, str) else registered.sentence
            self._tracking += f"; {outcome}"
        return self._tracking

    async def _with_backoff(self, method: Any, argument: Any, *, heartbeat: timedelta) -> Any:
        """One tracking activity, called again after a failure (doubling the wait up to a minute) until it
        succeeds, fails on bad input, or the tracking deadline passes; returns its result or the last error."""
        deadline = workflow.now() + TIMEOUTS.tracking_schedule_to_close
        delay = TIMEOUTS.retry_initial
        while True:
            try:
                return await workflow.execute_activity_method(
                    method,
                    argument,
                    start_to_close_timeout=TIMEOUTS.tracking_start_to_close,
                    heartbeat_timeout=heartbeat,
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
            except ActivityError as exc:
                cause = root_cause(exc)
                failure = exc.cause
                bad_input = isinstance(failure, ApplicationError) and failure.non_retryable
                if bad_input or workflow.now() + delay > deadline:
                    return cause
                self._tracking = f"MLflow logging waits {delay.total_seconds():.0f} s to try again: {cause}"
                workflow.logger.warning("experiment %s: %s", self._experiment_id, self._tracking)
                await workflow.sleep(delay)
                delay = min(delay * 2, TIMEOUTS.tracking_retry_maximum)

    def _failed(self, run_id: str, error: str) -> RunResult:
        status = self._status[run_id]
        status.phase, status.error = RunPhase.failed, error
        workflow.logger.warning("run %s failed: %s", run_id, error)
        return RunResult(run_id=run_id, config=status.config, status="failed", error=error)

    # --- handlers -------------------------------------------------------------------------------------------

    @workflow.query(name=QUERY.status)
    def status(self) -> CoordinatorStatus:
        """Each run's phase, the experiment's summary once computed, and a search's leaderboard."""
        search = self._search.outcome() if self._search is not None else None
        return CoordinatorStatus(
            experiment_id=self._experiment_id,
            runs=list(self._status.values()),
            summary=self._summary,
            search=search,
            tracking=self._tracking,
        )


# --- patch checks (docs/versioning.md): each called where its command goes, so recorded histories replay ---


def _snapshot_in_coordinator() -> bool:
    """The coordinator snapshots a run's data before starting its training child; coordinators started
    before this change left it to the child."""
    return workflow.patched(PATCH.snapshot_in_coordinator)


def _child_type(current: str, legacy: str) -> str:
    """Children get the reference design's type names; a coordinator started before that change (its
    history has no marker) keeps starting the old ones, so its replay stays deterministic."""
    return current if workflow.patched(PATCH.reference_type_names) else legacy
