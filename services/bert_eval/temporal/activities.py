"""Activities: thin wrappers over the ML core.

Core calls run in a thread; the async side heartbeats (so a dead worker is noticed within the heartbeat
timeout, whatever the core is doing), forwards cancellation and worker shutdown to the core's
`should_stop`, and maps each core error to a retry decision (see core/errors.py):
bad input fails at once, a transient outage retries with backoff, a deterministic failure fails the
activity and the workflow runs it again a bounded number of times.
Heartbeats carry the training progress; they are the only progress channel (no signals), and
`activity.heartbeat` only queues the details, so it never waits on an RPC.
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
from bert_eval.core.errors import DeterministicFailure, InvalidInputError, TrainingInterrupted, classify
from bert_eval.core.evaluation import evaluate, load_eval_result
from bert_eval.core.fsutil import atomic_write_json
from bert_eval.core.inference import predict
from bert_eval.core.layout import RunLayout, experiment_file, snapshots_dir
from bert_eval.core.modeling import pick_device
from bert_eval.core.observer import CheckpointEvent, LogWindow, ResumeEvent, TrainingObserver
from bert_eval.core.snapshot import create_snapshot, eval_table, open_snapshot
from bert_eval.core.rundir import completed_summary, run_dir_conflict
from bert_eval.temporal.names import ACTIVITY, DETERMINISTIC_FAILURE, INVALID_INPUT, TRAINING_INTERRUPTED, TRANSIENT_FAILURE
from bert_eval.core.training import FineTuneRequest, fine_tune
from bert_eval.types import (
    EvalResult,
    EvalRunInput,
    ExistingRun,
    Experiment,
    PredictInput,
    PredictResult,
    RunSpec,
    SnapshotInput,
    SnapshotResult,
    TrainingInput,
    TrainingProgress,
    TrainingSummary,
)

__all__ = ["EvalActivities", "TrainingActivities"]

_HEARTBEAT_EVERY_S = 1.0

log = telemetry.get_logger(__name__)
T = TypeVar("T")


@contextlib.contextmanager
def _activity_scope(run_id: str, experiment_id: str | None = None) -> Iterator[None]:
    """Log lines carry the run and this attempt; a core error becomes an ApplicationError whose type
    and retryability follow its class (core/errors.py); messages always name the run."""
    info = activity.info()
    with telemetry.bind_run(
        run_id=run_id, experiment_id=experiment_id, workflow_id=info.workflow_id, activity=info.activity_type, attempt=info.attempt
    ):
        try:
            yield
        except (ApplicationError, TrainingInterrupted, asyncio.CancelledError):
            raise
        except Exception as exc:  # every other error is classified: the retry decision depends on it
            raise _application_error(run_id, exc) from None


def _application_error(run_id: str, exc: Exception) -> ApplicationError:
    kind = classify(exc)
    message = str(exc) or type(exc).__name__
    if f"run {run_id}" not in message:
        message = f"run {run_id}: {message}"
    if kind == "invalid_input":
        telemetry.set_phase(run_id, "failed")
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
    context = contextvars.copy_context()  # the activity's log and trace context, as asyncio.to_thread does
    task = asyncio.get_running_loop().run_in_executor(executor, functools.partial(context.run, call))
    while True:
        if tick is not None:
            await tick()
        else:
            activity.heartbeat()
        done, _ = await asyncio.wait({task}, timeout=_HEARTBEAT_EVERY_S)
        if done:
            return task.result()


class _PrometheusTrainingObserver(TrainingObserver):
    """The fine-tune core's observer events as this worker's Prometheus metrics."""

    def __init__(self, run_id: str, model: str) -> None:
        self._run_id = run_id
        self._labels = {"run_id": run_id, "model": model}

    def phase(self, phase: str) -> None:
        telemetry.set_phase(self._run_id, phase)

    def started(self, total_steps: int) -> None:
        telemetry.TRAINING.total_steps.labels(**self._labels).set(total_steps)

    def step(self, step: int, epoch: float) -> None:
        telemetry.TRAINING.step.labels(**self._labels).set(step)
        telemetry.TRAINING.epoch.labels(**self._labels).set(epoch)

    def logged(self, window: LogWindow) -> None:
        metrics = telemetry.TRAINING
        metrics.loss.labels(**self._labels).set(window.loss)
        metrics.learning_rate.labels(**self._labels).set(window.learning_rate)
        metrics.samples_per_second.labels(**self._labels).set(window.samples_per_s)
        metrics.tokens_per_second.labels(**self._labels).set(window.tokens_per_s)

    def checkpoint_saved(self, event: CheckpointEvent) -> None:
        metrics = telemetry.TRAINING
        metrics.checkpoint_seconds.labels(**self._labels).observe(event.seconds)
        metrics.checkpoint_bytes.labels(**self._labels).set(event.bytes)
        metrics.checkpoints.labels(**self._labels).inc()

    def resumed(self, event: ResumeEvent) -> None:
        metrics = telemetry.TRAINING
        metrics.resumes.labels(**self._labels).inc()
        if event.recovery_seconds is not None:
            metrics.recovery_seconds.labels(**self._labels).set(event.recovery_seconds)
        if event.steps_lost is not None:
            metrics.steps_lost.labels(**self._labels).set(event.steps_lost)


def _record_eval_metrics(result: EvalResult) -> None:
    labels = {"run_id": result.run_id, "split": result.split}
    telemetry.EVAL.examples.labels(**labels).set(result.examples)
    telemetry.EVAL.examples_per_second.labels(**labels).set(result.examples / max(result.duration_s, 1e-9))
    telemetry.EVAL.duration.labels(**labels).observe(result.duration_s)
    for name, value in result.metrics.items():
        telemetry.EVAL.metric.labels(metric=name, **labels).set(value)


class TrainingActivities:
    """Activities of the GPU training pool."""

    def __init__(self, *, runs_dir: Path, force_cpu: bool = False) -> None:
        self.runs_dir = Path(runs_dir)
        self.device = pick_device(force_cpu)
        # Every run trains on this one thread. Each thread that runs torch ops keeps its own OpenMP pool;
        # with more pool threads than CPUs, libgomp stops spinning between parallel regions and sleeps
        # instead. From the loop's default pool, a fine-tune landed on a second thread now and then (after
        # ~50 short runs), and MiniLM then trained 1.15-1.2x slower on 2 CPUs for the worker's life.
        self._training_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bert-eval-training")

    @activity.defn(name=ACTIVITY.fine_tune)
    async def fine_tune(self, request: TrainingInput) -> TrainingSummary:
        info = activity.info()
        run = request.run
        if request.snapshot is None:
            raise ApplicationError(f"run {run.id}: fine_tune called without a snapshot", type=INVALID_INPUT, non_retryable=True)
        previous = None
        if info.heartbeat_details:
            with contextlib.suppress(ValueError, TypeError):
                previous = TrainingProgress.model_validate(info.heartbeat_details[0])
        stop = threading.Event()
        relay = _ProgressRelay(TrainingProgress(run_id=run.id, attempt=info.attempt, phase="loading"), stop)
        device = self.device if run.train.use_gpu else "cpu"
        core_request = FineTuneRequest(
            run=run, snapshot=request.snapshot, runs_dir=self.runs_dir, device=device, attempt=info.attempt, previous=previous,
            # Write fence: the attempt scheduled last (server clock) is the one allowed to publish.
            scheduled_at=info.current_attempt_scheduled_time.timestamp(),
        )
        observer = _PrometheusTrainingObserver(run.id, run.model)
        with _activity_scope(run.id, request.experiment_id):
            log.info("fine-tune started", device=device, resumable_from=previous.last_checkpoint.step if previous and previous.last_checkpoint else None)
            work = asyncio.create_task(
                _in_thread(
                    lambda: fine_tune(core_request, on_progress=relay.update, should_stop=stop.is_set, observer=observer),
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

    def __init__(self, *, runs_dir: Path, data_dir: Path | None, force_cpu: bool = False) -> None:
        self.runs_dir = Path(runs_dir)
        self.data_dir = data_dir
        self.device = pick_device(force_cpu)
        # Evaluations and predictions run one at a time, on this one thread; the other activities (snapshots,
        # reuse checks) keep running beside them. Concurrent evaluations share the same CPUs anyway (4 at
        # once took as long as 4 in a row: 14.5 s vs 14.2 s, but the first result came after 14 s instead
        # of 3.5 s), and every thread that has run torch keeps an OpenMP pool: with idle pools of other
        # threads alive, a lone evaluation ran ~7% slower on 2 CPUs (see TrainingActivities).
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bert-eval-model")

    @activity.defn(name=ACTIVITY.snapshot_dataset)
    async def snapshot_dataset(self, request: SnapshotInput) -> SnapshotResult:
        with _activity_scope(request.run_id):
            with telemetry.tracer().start_as_current_span("snapshot", attributes={"run_id": request.run_id}) as span:
                result = await _in_thread(lambda: create_snapshot(request, runs_dir=self.runs_dir, data_dir=self.data_dir))
                span.set_attributes({"snapshot_id": result.snapshot_id, "reused": result.reused})
            log.info("snapshot ready", snapshot_id=result.snapshot_id, splits=result.splits, reused=result.reused)
            return result

    @activity.defn(name=ACTIVITY.record_experiment)
    async def record_experiment(self, experiment: Experiment) -> None:
        """Write `experiments/<id>.json` so reports can find an experiment's runs from disk alone."""
        payload = {
            "experiment_id": experiment.id,
            "run_ids": [run.id for run in experiment.runs],
            "runs": [run.model_dump(mode="json") for run in experiment.runs],
        }
        await _in_thread(lambda: atomic_write_json(experiment_file(self.runs_dir, experiment.id), payload))

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
            evaluation = load_eval_result(layout, run.eval.split)
            if evaluation is not None and evaluation.examples != snapshot.splits.get(eval_table(run.eval.split)):
                evaluation = None
            return ExistingRun(summary=summary, snapshot=snapshot, evaluation=evaluation)

        with _activity_scope(run.id):
            return await _in_thread(look)

    @activity.defn(name=ACTIVITY.evaluate_model)
    async def evaluate_model(self, request: EvalRunInput) -> EvalResult:
        with _activity_scope(request.run_id, request.experiment_id):
            log.info("evaluation started", split=request.request.split, model_dir=request.model_dir)
            result = await _in_thread(
                lambda: evaluate(
                    run_id=request.run_id,
                    model_dir=request.model_dir,
                    snapshot=request.snapshot,
                    request=request.request,
                    runs_dir=self.runs_dir,
                    device=self.device if request.request.use_gpu else "cpu",
                ),
                executor=self._model_thread,
            )
            _record_eval_metrics(result)
            return result

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

    def all(self) -> list[Callable[..., Any]]:
        return [self.record_experiment, self.snapshot_dataset, self.find_existing_run, self.evaluate_model, self.predict]
