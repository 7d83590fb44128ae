"""Activities: thin wrappers over the ML core.

Core calls run in a thread; the async side heartbeats (so a dead worker is noticed within the heartbeat
timeout, whatever the core is doing), forwards cancellation and worker shutdown to the core's
`should_stop`, and maps each core error to a retry decision (see core/errors.py):
bad input fails at once, a transient outage retries with backoff, a deterministic failure fails the
activity and the workflow runs it again a bounded number of times.
Heartbeats carry the training progress; they are the only progress channel (no signals), and
`activity.heartbeat` only queues the details, so it never waits on an RPC.

Each activity takes one typed input, defined beside it where the core has no type of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from bert_eval import telemetry
from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot, eval_table, open_snapshot
from bert_eval.core.errors import DeterministicFailure, InvalidInputError, TrainingInterrupted, classify, naming_run
from bert_eval.core.evaluation.batched import evaluate, load_eval_result
from bert_eval.core.evaluation.cells import evaluate_cell
from bert_eval.core.evaluation.inference import predict
from bert_eval.core.evaluation.predictions import predictions_intact
from bert_eval.core.modeling import check_model_roots, describe_model, pick_device, resolve_reference_model_path
from bert_eval.core.records import (
    EvalResult,
    ExperimentSummary,
    ModelInfo,
    PredictResult,
    SnapshotResult,
    TrainingProgress,
    TrainingSummary,
)
from bert_eval.core.search.rungs import RungResult, evaluate_rung, keep_last_checkpoint, load_rung
from bert_eval.core.search.sampling import suggest
from bert_eval.core.statistics.summary import RunOutcome, summarize_runs
from bert_eval.core.storage.fsutil import atomic_write_json
from bert_eval.core.storage.layout import RunLayout, experiment_file, snapshots_dir, write_experiment_record
from bert_eval.core.storage.rundir import StaleAttemptError, completed_summary, record_failed_training, run_dir_conflict
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.spec import Experiment, RunSpec
from bert_eval.temporal import metrics
from bert_eval.temporal.names import (
    ACTIVITY,
    DETERMINISTIC_FAILURE,
    INVALID_INPUT,
    TIMEOUTS,
    TRAINING_INTERRUPTED,
    TRANSIENT_FAILURE,
)
from bert_eval.temporal.payloads import (
    CellInput,
    EvalRunInput,
    ExistingRun,
    ModelSourceInput,
    Payload,
    PredictInput,
    RungInput,
    SearchOutcome,
    SearchProgress,
    SuggestInput,
    SummaryInput,
)

__all__ = ["EvalActivities", "FineTuneInput", "TrainingActivities"]

log = telemetry.get_logger(__name__)
T = TypeVar("T")


class FineTuneInput(Payload):
    """Input of the fine-tune activity: the run and the snapshot it trains on."""

    # The training workflow sent its whole input before FineTuneInput: those fields are read, then dropped,
    # so an attempt scheduled by an earlier release still runs after an upgrade.
    retired_fields = Payload.retired_fields | {"heartbeat_timeout_s", "expected_snapshot_id", "eval_task_queue"}

    experiment_id: str
    run: RunSpec
    snapshot: SnapshotResult
    stop_at_step: int | None = None  # a search rung: pause there with a checkpoint


def _heartbeat_period_s() -> float:
    """Half the activity's heartbeat timeout (a beat is never the one that arrives late), and no longer than
    the worker's heartbeat throttle: beating less often than the SDK sends would delay progress and cancels."""
    timeout = activity.info().heartbeat_timeout
    throttle = TIMEOUTS.heartbeat_throttle.total_seconds()
    return min(timeout.total_seconds() / 2, throttle) if timeout else throttle


@contextlib.contextmanager
def _activity_scope(
    run_id: str, experiment_id: str | None = None, *, on_final_failure: Callable[[Exception, str], None] | None = None
) -> Iterator[None]:
    """Log lines carry the run and this attempt; a core error becomes an ApplicationError whose type
    and retryability follow its class (core/errors.py); messages always name the run. A non-retryable one
    is first passed to `on_final_failure` (the error, the message)."""
    info = activity.info()
    with telemetry.bind_run(
        run_id=run_id,
        experiment_id=experiment_id,
        workflow_id=info.workflow_id,
        activity=info.activity_type,
        attempt=info.attempt,
    ):
        try:
            yield
        except (ApplicationError, TrainingInterrupted, asyncio.CancelledError):
            raise
        except Exception as exc:  # every other error is classified: the retry decision depends on it
            error = _application_error(run_id, exc)
            if on_final_failure is not None and error.non_retryable:
                on_final_failure(exc, error.message)
            raise error from None


def _application_error(run_id: str, exc: Exception) -> ApplicationError:
    kind = classify(exc)
    message = naming_run(run_id, str(exc) or type(exc).__name__)
    if kind == "invalid_input":
        metrics.set_phase(run_id, "failed")
        log.error("input rejected", error=message)
        return ApplicationError(message, type=INVALID_INPUT, non_retryable=True)
    if kind == "transient":
        log.warning("transient failure; retrying with backoff", error=message, error_type=type(exc).__name__)
        return ApplicationError(message, type=TRANSIENT_FAILURE)
    if not isinstance(exc, DeterministicFailure):
        message = f"{message} ({type(exc).__name__})"
    log.error("attempt failed", error=message, error_type=type(exc).__name__)
    return ApplicationError(message, type=DETERMINISTIC_FAILURE, non_retryable=True)


class _ProgressRelay:
    """Carries the training thread's latest progress to heartbeats."""

    def __init__(self, first: TrainingProgress, stop: threading.Event) -> None:
        self.latest = first  # replaced from the training thread: a reference swap, safe under the GIL
        self._stop = stop

    def update(self, progress: TrainingProgress) -> None:
        self.latest = progress

    async def tick(self) -> None:
        progress = self.latest.model_copy(update={"heartbeat_time": time.time()})
        activity.heartbeat(progress.model_dump(mode="json"))
        if activity.is_worker_shutdown():
            self._stop.set()  # save a checkpoint now; another worker resumes from it


async def _in_thread(
    call: Callable[[], T], *, tick: Callable[[], Awaitable[None]] | None = None, executor: Executor | None = None
) -> T:
    """Run a blocking core call in a thread (of `executor`, else the loop's default pool), heartbeating
    (and running `tick`) until it returns.

    The first heartbeat goes out at once: an attempt lost within its first second (a small run reaches
    its first checkpoint that fast) still leaves the server its details, so the retry can say how long
    recovery took instead of "unknown".
    """
    period = _heartbeat_period_s()
    context = contextvars.copy_context()  # the activity's log and trace context, as asyncio.to_thread does
    task = asyncio.get_running_loop().run_in_executor(executor, functools.partial(context.run, call))
    while True:
        if tick is not None:
            await tick()
        else:
            activity.heartbeat()
        done, _ = await asyncio.wait({task}, timeout=period)
        if done:
            return task.result()


def _kept_predictions_intact(layout: RunLayout, split: str, evaluation: EvalResult) -> bool:
    """Whether an evaluation that recorded its predictions' digest still has them, unchanged."""
    return evaluation.predictions_sha256 is None or predictions_intact(layout.predictions_file(split), evaluation)


class TrainingActivities:
    """Activities of the GPU training pool."""

    def __init__(self, *, runs_dir: Path, force_cpu: bool = False) -> None:
        self.runs_dir = Path(runs_dir)
        self.device = pick_device(force_cpu)
        # Every run trains on this one thread: each thread that runs torch keeps its own OpenMP pool, and
        # idle pools of other threads slow training (docs/performance.md, "one model thread").
        self._training_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bert-eval-training")

    @activity.defn(name=ACTIVITY.fine_tune)
    async def fine_tune(self, request: FineTuneInput) -> TrainingSummary:
        """Fine-tune the run (core `fine_tune`) on this worker's device, heartbeating its progress; a retry
        resumes from the progress in the last heartbeat and the newest checkpoint. Bad input fails it for good
        (non-retryable `ApplicationError`); a cancellation or shutdown saves a checkpoint first."""
        info = activity.info()
        run = request.run
        previous = None
        if info.heartbeat_details:
            with contextlib.suppress(ValueError, TypeError):
                previous = TrainingProgress.model_validate(info.heartbeat_details[0])
        stop = threading.Event()
        relay = _ProgressRelay(TrainingProgress(run_id=run.id, attempt=info.attempt, phase="loading"), stop)
        device = self.device if run.train.use_gpu else "cpu"
        core_request = FineTuneRequest(
            run=run,
            snapshot=request.snapshot,
            runs_dir=self.runs_dir,
            device=device,
            attempt=info.attempt,
            previous=previous,
            # Write fence: the attempt scheduled last (server clock) is the one allowed to publish.
            scheduled_at=info.current_attempt_scheduled_time.timestamp(),
            stop_at_step=request.stop_at_step,
        )
        observer = metrics.PrometheusTrainingObserver(run.id, run.model)

        def failed(exc: Exception, message: str) -> None:
            if not isinstance(exc, StaleAttemptError):  # a superseded attempt: the current one goes on
                record_failed_training(RunLayout(self.runs_dir, run.id), run, attempt=info.attempt, error=message)

        with _activity_scope(run.id, request.experiment_id, on_final_failure=failed):
            log.info(
                "fine-tune started",
                device=device,
                resumable_from=previous.last_checkpoint.step if previous and previous.last_checkpoint else None,
            )
            work = asyncio.create_task(
                _in_thread(
                    lambda: fine_tune(
                        core_request, on_progress=relay.update, should_stop=stop.is_set, observer=observer
                    ),
                    tick=relay.tick,
                    executor=self._training_thread,
                )
            )
            try:
                summary = await asyncio.shield(work)
            except asyncio.CancelledError:
                # Cancelled (workflow cancel, or the worker giving up on graceful shutdown):
                # stop at the next step with a checkpoint, then report the cancellation.
                stop.set()
                with contextlib.suppress(BaseException):
                    await work
                log.info("fine-tune cancelled; checkpoint saved")
                raise
            except TrainingInterrupted as exc:
                # Worker shutdown: fail this attempt (retryable) so another worker resumes right away.
                raise ApplicationError(str(exc), type=TRAINING_INTERRUPTED) from None
            log.info("fine-tune finished", steps=summary.steps, final_loss=summary.final_loss, resumes=summary.resumes)
            return summary


class EvalActivities:
    """Activities of the CPU eval pool: snapshots, reuse checks, evaluation."""

    def __init__(
        self, *, runs_dir: Path, data_dir: Path | None, models_dir: Path | None = None, force_cpu: bool = False
    ) -> None:
        self.runs_dir = Path(runs_dir)
        self.data_dir = data_dir
        self.models_dir = models_dir
        self.device = pick_device(force_cpu)
        # Evaluations and predictions run one at a time, on this one thread (as training does: one OpenMP
        # pool); snapshots and reuse checks run beside them. Concurrent evaluations would share the same
        # CPUs, so one at a time delivers the first result sooner for the same total.
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bert-eval-model")

    @activity.defn(name=ACTIVITY.snapshot_dataset)
    async def snapshot_dataset(self, request: SnapshotInput) -> SnapshotResult:
        """Read the run's dataset into a content-addressed snapshot (or find the one already taken)."""
        with _activity_scope(request.run_id):
            with telemetry.tracer().start_as_current_span("snapshot", attributes={"run_id": request.run_id}) as span:
                result = await _in_thread(
                    lambda: create_snapshot(request, runs_dir=self.runs_dir, data_dir=self.data_dir)
                )
                span.set_attributes({"snapshot_id": result.snapshot_id, "reused": result.reused})
            log.info("snapshot ready", snapshot_id=result.snapshot_id, splits=result.splits, reused=result.reused)
            return result

    @activity.defn(name=ACTIVITY.record_experiment)
    async def record_experiment(self, experiment: Experiment) -> None:
        """Write `experiments/<id>.json` so reports can find an experiment's runs from disk alone. A record
        that listed other runs is kept beside it (`<id>.superseded-<digest>.json`), never lost."""
        payload = {
            "experiment_id": experiment.id,
            "run_ids": [run.id for run in experiment.runs],
            "runs": [run.model_dump(mode="json") for run in experiment.runs],
            "search": experiment.search.model_dump(mode="json") if experiment.search is not None else None,
        }
        await _in_thread(lambda: write_experiment_record(experiment_file(self.runs_dir, experiment.id), payload))

    @activity.defn(name=ACTIVITY.find_existing_run)
    async def find_existing_run(self, run: RunSpec) -> ExistingRun:
        """What already exists on disk for this run; refuses a run id that holds a different spec."""
        layout = RunLayout(self.runs_dir, run.id)

        def look() -> ExistingRun:
            if not layout.root.exists():
                return ExistingRun()
            # A corrupt spec.json is a conflict too: retrying would read the same bytes.
            conflict = run_dir_conflict(layout, run)
            if conflict is not None:
                raise InvalidInputError(conflict)
            summary = completed_summary(layout, run)
            if summary is None:
                return ExistingRun()
            snapshot = open_snapshot(snapshots_dir(self.runs_dir) / summary.snapshot_id)
            split = run.primary_eval.split
            evaluation = load_eval_result(layout, split)
            if evaluation is not None and evaluation.examples != snapshot.splits.get(eval_table(split)):
                evaluation = None
            again = None
            if evaluation is not None and not _kept_predictions_intact(layout, split, evaluation):
                # Comparisons and intervals read the kept predictions: evaluate again rather than reuse a result
                # whose predictions are gone or altered (and say so in the run's result).
                kept = layout.predictions_file(split)
                again = f"its kept predictions {kept} " + (
                    "did not match the digest its evaluation recorded (altered)" if kept.exists() else "were missing"
                )
                log.warning(
                    "kept predictions missing or not matching their digest; evaluating the run again",
                    run_id=run.id,
                    split=split,
                    predictions=str(kept),
                )
                evaluation = None
            return ExistingRun(summary=summary, snapshot=snapshot, evaluation=evaluation, evaluated_again=again)

        with _activity_scope(run.id):
            return await _in_thread(look)

    @activity.defn(name=ACTIVITY.evaluate_model)
    async def evaluate_model(self, evaluation: EvalRunInput) -> EvalResult:
        """Evaluate a run's trained model on the requested split (core `evaluate`: predictions, then
        `eval-<split>.json`), on the model thread and this worker's device unless the request asks for the CPU."""
        with _activity_scope(evaluation.run_id, evaluation.experiment_id):
            log.info("evaluation started", split=evaluation.request.split, model_dir=evaluation.model_dir)
            return await self._on_model_thread(
                lambda device: evaluate(
                    run_id=evaluation.run_id,
                    model_dir=evaluation.model_dir,
                    snapshot=evaluation.snapshot,
                    request=evaluation.request,
                    runs_dir=self.runs_dir,
                    device=device,
                ),
                use_gpu=evaluation.request.use_gpu,
            )

    @activity.defn(name=ACTIVITY.predict)
    async def predict(self, request: PredictInput) -> PredictResult:
        """Label texts with a trained run's final model (eval pool)."""
        with _activity_scope(request.run_id):
            result = await _in_thread(
                lambda: predict(
                    run_id=request.run_id,
                    texts=request.texts,
                    runs_dir=self.runs_dir,
                    device=self.device if request.use_gpu else "cpu",
                    batch_size=request.batch_size,
                    max_seq_length=request.max_seq_length,
                ),
                executor=self._model_thread,
            )
            log.info("predicted", texts=len(request.texts))
            return result

    @activity.defn(name=ACTIVITY.describe_model)
    async def describe_model(self, request: ModelSourceInput) -> ModelInfo:
        """Where a run's model is, its digest (which keys its evaluation cells) and its classes."""

        def describe() -> ModelInfo:
            source = request.source
            if request.reference_path:
                source = resolve_reference_model_path(source, runs_dir=self.runs_dir, models_dir=self.models_dir)
            # Eval-only runs and direct evaluations alike read models only inside the runs directory and the mirror.
            check_model_roots(source, runs_dir=self.runs_dir, models_dir=self.models_dir)
            return describe_model(source, runs_dir=self.runs_dir, models_dir=self.models_dir)

        with _activity_scope(request.run_id):
            return await _in_thread(describe)

    @activity.defn(name=ACTIVITY.evaluate_cell)
    async def evaluate_cell(self, cell: CellInput) -> EvalResult:
        """One cell of the evaluation matrix: evaluated once per (model, rows, split), reused after that."""
        with _activity_scope(cell.run_id, cell.experiment_id):
            log.info("evaluation cell started", split=cell.request.split, model_digest=cell.model.digest)
            return await self._on_model_thread(
                lambda device: evaluate_cell(
                    run_id=cell.run_id,
                    model=cell.model,
                    snapshot=cell.snapshot,
                    request=cell.request,
                    runs_dir=self.runs_dir,
                    device=device,
                ),
                use_gpu=cell.request.use_gpu,
            )

    async def _on_model_thread(self, evaluation: Callable[[str], EvalResult], *, use_gpu: bool) -> EvalResult:
        """An evaluation on the model thread, on this worker's device (or the CPU); its metrics once computed."""
        result = await _in_thread(lambda: evaluation(self.device if use_gpu else "cpu"), executor=self._model_thread)
        if not result.reused:
            metrics.record_eval_metrics(result)
        return result

    @activity.defn(name=ACTIVITY.summarize_experiment)
    async def summarize_experiment(self, request: SummaryInput) -> ExperimentSummary:
        """Intervals per run and per configuration from the runs' kept predictions; written beside the
        experiment's record (`experiments/<id>.summary.json`) for reports."""
        outcomes = [
            RunOutcome(
                run_id=r.run_id,
                config=r.config,
                dataset=r.dataset,
                evaluation=r.evaluation,
                cells=tuple((c.dataset, c.evaluation) for c in r.cells),
            )
            for r in request.runs
        ]

        def summarize() -> ExperimentSummary:
            summary = summarize_runs(outcomes)
            record = experiment_file(self.runs_dir, request.experiment_id)
            atomic_write_json(
                record.with_name(f"{request.experiment_id}.summary.json"), summary.model_dump(mode="json")
            )
            return summary

        with telemetry.bind_run(experiment_id=request.experiment_id):
            return await _in_thread(summarize)

    @activity.defn(name=ACTIVITY.suggest_trial)
    async def suggest_trial(self, request: SuggestInput) -> dict[str, float | int]:
        """A search's next trial, from its sampler (recorded in history: replay never asks again)."""
        with telemetry.bind_run(experiment_id=request.experiment_id, trial=request.index):
            params = await _in_thread(lambda: suggest(request.search, request.index, request.history, request.seen))
            log.info("trial sampled", params=params)
            return params

    @activity.defn(name=ACTIVITY.find_rung)
    async def find_rung(self, request: RungInput) -> RungResult | None:
        """A rung's result measured before (a resubmitted search), or None."""
        with _activity_scope(request.run.id, request.experiment_id):
            return await _in_thread(
                lambda: load_rung(request.run, request.step, snapshot=request.snapshot, runs_dir=self.runs_dir)
            )

    @activity.defn(name=ACTIVITY.evaluate_rung)
    async def evaluate_rung(self, request: RungInput) -> RungResult:
        """A trial's objective at a rung, on the search slice (on the model thread, like every evaluation)."""
        model_dir = request.model_dir
        if model_dir is None:
            raise ApplicationError(
                f"run {request.run.id}: evaluate_rung needs model_dir", type=INVALID_INPUT, non_retryable=True
            )
        with _activity_scope(request.run.id, request.experiment_id):
            device = self.device if request.run.primary_eval.use_gpu else "cpu"
            result = await _in_thread(
                lambda: evaluate_rung(
                    request.run,
                    request.step,
                    model_dir=model_dir,
                    snapshot=request.snapshot,
                    runs_dir=self.runs_dir,
                    device=device,
                ),
                executor=self._model_thread,
            )
            for name, value in result.metrics.items():
                metrics.SEARCH.rung_objective.labels(
                    experiment_id=request.experiment_id, run_id=request.run.id, rung_step=str(request.step), metric=name
                ).set(value)
            return result

    @activity.defn(name=ACTIVITY.record_search_progress)
    async def record_search_progress(self, progress: SearchProgress) -> None:
        """A search's trial counts and best objective, as this worker's Prometheus gauges."""
        for state, count in progress.trials.items():
            metrics.SEARCH.trials.labels(experiment_id=progress.experiment_id, state=state).set(count)
        if progress.best is not None:
            metrics.SEARCH.best.labels(experiment_id=progress.experiment_id, metric=progress.metric).set(progress.best)

    @activity.defn(name=ACTIVITY.record_search)
    async def record_search(self, outcome: SearchOutcome) -> None:
        """Write `experiments/<id>.search.json` (every trial, its rungs and state) for reports."""
        record = experiment_file(self.runs_dir, outcome.experiment_id)
        await _in_thread(
            lambda: atomic_write_json(
                record.with_name(f"{outcome.experiment_id}.search.json"), outcome.model_dump(mode="json")
            )
        )

    @activity.defn(name=ACTIVITY.keep_last_checkpoint)
    async def keep_last_checkpoint(self, run_id: str) -> int:
        """Prune a stopped trial's checkpoints to the one at its last rung; returns how many were removed."""
        with _activity_scope(run_id):
            return len(await _in_thread(lambda: keep_last_checkpoint(run_id, runs_dir=self.runs_dir)))

    def all(self) -> list[Callable[..., Any]]:
        """Every activity of the eval pool, for the worker to register."""
        return [
            self.suggest_trial,
            self.find_rung,
            self.evaluate_rung,
            self.keep_last_checkpoint,
            self.record_search_progress,
            self.record_search,
            self.record_experiment,
            self.snapshot_dataset,
            self.find_existing_run,
            self.evaluate_model,
            self.predict,
            self.describe_model,
            self.evaluate_cell,
            self.summarize_experiment,
        ]
