"""Client-side operations the CLI and starter Job use: submit, watch, wait, predict, look up status.

Each returns data (or raises); printing is the caller's.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Literal

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.records import PredictResult, TrainingProgress, TrainingSummary
from bert_eval.core.storage.layout import RunLayout, experiment_file
from bert_eval.core.storage.rundir import run_dir_conflict, trained_summary
from bert_eval.settings import Settings, get_settings, task_queues
from bert_eval.spec import RUN_MODEL_PREFIX, Experiment, RunSpec, SearchSpec
from bert_eval.telemetry import run_baggage
from bert_eval.temporal.names import (
    ACTIVITY,
    EVAL_TASK_QUEUE,
    EXPERIMENT_ID,
    QUERY,
    RUN_ID,
    TRAINING_TASK_QUEUE,
    WORKFLOW,
    coordinator_workflow_id,
    predict_workflow_id,
    release_prefix,
    training_workflow_id,
)
from bert_eval.temporal.payloads import (
    CoordinatorInput,
    CoordinatorStatus,
    ExperimentResult,
    PredictInput,
    RunPhase,
    TrainingResult,
)

__all__ = [
    "Claim",
    "RecordedExperiment",
    "SavedCheckpoint",
    "SubmissionError",
    "check_runs_dir",
    "claim_conflict",
    "extend_experiment",
    "recorded_experiment",
    "refusal",
    "submitted_experiment",
    "experiment_status",
    "find_workflows",
    "missing_workers",
    "predict",
    "start_experiment",
    "training_progress",
    "wait_for_checkpoint",
    "wait_until_started",
    "watch",
]

# Which worker serves each task queue, for the "nobody polls" message.
_QUEUE_WORKERS = {EVAL_TASK_QUEUE: "bert-eval worker eval", TRAINING_TASK_QUEUE: "bert-eval worker training"}

# A poller that has not polled for this long is gone (long polls last about a minute).
_POLLER_STALE_S = 90.0


def _worker_command(queue: str) -> str:
    return next((command for name, command in _QUEUE_WORKERS.items() if queue.endswith(name)), "bert-eval worker")


def _id_prefix() -> str:
    """This deployment's workflow id prefix (its task-queue prefix, temporal/names.py)."""
    return release_prefix(task_queues(get_settings())[1])


class SubmissionError(ValueError):
    """A submission refused before anything was started; the message is one line saying why and what to do."""


# What a submission does with an experiment id that already names other runs: `new` refuses, `extend` adds the
# file's runs to the recorded ones, `replace` records only the file's runs (run directories are never deleted).
Claim = Literal["new", "extend", "replace"]

# How many run ids a conflict message lists per kind of difference.
_LISTED_RUNS = 5


@dataclass(frozen=True)
class RecordedExperiment:
    """What an experiment id names already: its runs (and search), where that was read, and whether its
    coordinator is still running."""

    runs: tuple[RunSpec, ...]
    search: SearchSpec | None
    where: str
    running: bool = False
    compare_search: bool = True


def recorded_experiment(runs_dir: Path, experiment_id: str) -> RecordedExperiment | None:
    """The experiment record `experiments/<id>.json` in the runs directory, or None when there is none (or
    the runs directory is not visible here). Raises SubmissionError when the record cannot be read."""
    try:
        path = experiment_file(Path(runs_dir), experiment_id)
    except (ValueError, InvalidInputError) as exc:
        raise SubmissionError(f"experiment {experiment_id}: {exc} Nothing was submitted.") from None
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        runs = tuple(RunSpec.model_validate(run) for run in record["runs"])
        search = SearchSpec.model_validate(record["search"]) if record.get("search") is not None else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SubmissionError(
            f"experiment {experiment_id}: its record {path} cannot be read ({type(exc).__name__}); move it aside "
            "or use a new experiment_id. Nothing was submitted."
        ) from None
    # Records written before searches were recorded there hold no `search:`: compare their runs only.
    return RecordedExperiment(runs=runs, search=search, where=str(path), compare_search="search" in record)


def claim_conflict(experiment: Experiment, recorded: RecordedExperiment) -> str | None:
    """One line naming the experiment id, the runs that differ and the way out when `experiment` is not what
    the id already names; None when it is the same (resubmitting reuses or attaches).

    The same means the same run ids (and search); against a running coordinator also the same fingerprint
    per run, since attaching would answer with its results. Evaluations added to a run are no conflict (they
    are not part of what the run computes), and a finished run given another spec under its id is refused
    by the run-id check, which names the run directory."""
    mine = {run.id: run.fingerprint() for run in experiment.canonical().runs}
    theirs = {run.id: run.fingerprint() for run in recorded.runs}
    added = [run_id for run_id in mine if run_id not in theirs]
    dropped = [run_id for run_id in theirs if run_id not in mine]
    changed = [run_id for run_id in mine if recorded.running and run_id in theirs and mine[run_id] != theirs[run_id]]
    search_differs = recorded.compare_search and experiment.search != recorded.search
    if not (added or dropped or changed or search_differs):
        return None
    differences = [
        f"{label}: {_listed(ids)}"
        for label, ids in (
            ("only in this file", added),
            ("only in the recorded experiment", dropped),
            ("changed", changed),
        )
        if ids
    ] + (["its search: differs"] if search_differs else [])
    state = "is running" if recorded.running else "already exists"
    way_out = (
        "wait for it to finish (or cancel it), or give this file a new experiment_id"
        if recorded.running
        else "give this file a new experiment_id, or resubmit with --extend (add this file's runs to the recorded "
        "ones; finished runs are reused) or --replace (record only this file's runs; no run directory is deleted)"
    )
    return (
        f"experiment {experiment.id} {state} with different runs ({recorded.where}): {'; '.join(differences)}. "
        f"Nothing was submitted: {way_out}."
    )


def extend_experiment(experiment: Experiment, recorded: RecordedExperiment) -> Experiment:
    """The recorded runs followed by this experiment's new ones (a run id in both keeps this file's spec,
    which a run-id conflict check then refuses if it differs from the run directory's)."""
    experiment = experiment.canonical()
    if experiment.search is not None or recorded.search is not None:
        raise SubmissionError(
            f"experiment {experiment.id}: --extend adds runs to an experiment of runs; a search cannot be extended "
            "(give it a new experiment_id). Nothing was submitted."
        )
    mine = {run.id for run in experiment.runs}
    kept = tuple(run for run in recorded.runs if run.id not in mine)
    try:
        return Experiment(experiment_id=experiment.id, runs=kept + experiment.runs).canonical()
    except ValueError as exc:
        raise SubmissionError(f"experiment {experiment.id}: --extend: {exc}. Nothing was submitted.") from None


def _listed(run_ids: Sequence[str]) -> str:
    shown = ", ".join(run_ids[:_LISTED_RUNS])
    return shown + (f" (+{len(run_ids) - _LISTED_RUNS} more)" if len(run_ids) > _LISTED_RUNS else "")


async def submitted_experiment(client: Client, experiment_id: str) -> RecordedExperiment | None:
    """The experiment the coordinator of `experiment_id` was started with (read from its history's first
    event, so no worker is needed) and whether it still runs; None when Temporal holds no such workflow, or
    only one that did not complete (a refused or cancelled submission claims nothing)."""
    handle = client.get_workflow_handle(coordinator_workflow_id(experiment_id, prefix=_id_prefix()))
    try:
        description = await handle.describe(rpc_timeout=timedelta(seconds=10))
        async for event in handle.fetch_history_events():
            attributes = event.workflow_execution_started_event_attributes
            payloads = attributes.input.payloads
            (started,) = await client.data_converter.decode(payloads[:1], [CoordinatorInput]) if payloads else (None,)
            break
        else:
            return None
    except RPCError:
        return None
    except Exception:  # another shape (the reference design's input): not comparable here
        return None
    running = description.status == WorkflowExecutionStatus.RUNNING
    completed = description.status == WorkflowExecutionStatus.COMPLETED
    if not isinstance(started, CoordinatorInput) or not (running or completed):
        return None
    where = f"workflow {handle.id}, {'running' if running else 'completed'}"
    experiment = started.experiment
    return RecordedExperiment(runs=experiment.runs, search=experiment.search, where=where, running=running)


def refusal(exc: BaseException, *, of_type: str | None = None) -> str | None:
    """The message of a non-retryable application error along `exc`'s causes (the coordinator's refusal of
    bad input, read out of a `WorkflowFailureError`), or None when the failure is not a refusal; with
    `of_type`, only an error of that type (`names.INVALID_INPUT`) counts."""
    cause: BaseException | None = exc
    found = None
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.non_retryable and cause.message:
            if of_type is None or cause.type == of_type:
                found = cause.message
        cause = cause.__cause__
    return found


def check_runs_dir(experiment: Experiment, runs_dir: Path, *, claim: Claim = "new") -> None:
    """Reject, before submitting, a run id whose directory holds another spec's results, an eval-only run
    of another run's model whose training has not finished or failed, and (with `claim="new"`) an
    experiment id whose record holds other runs (when the runs directory is visible here).

    Raises SubmissionError, one line naming the run or experiment, the cause and the way out."""
    if claim == "new" and (recorded := recorded_experiment(runs_dir, experiment.canonical().id)) is not None:
        if (conflict := claim_conflict(experiment, recorded)) is not None:
            raise SubmissionError(conflict)
    in_experiment = {run.id for run in experiment.runs if not run.eval_only}
    for index, run in enumerate(experiment.runs):
        layout = RunLayout(runs_dir, run.id)
        conflict = run_dir_conflict(layout, run)  # a corrupt spec.json is a conflict too
        if conflict is not None:
            raise SubmissionError(f"{conflict} Nothing was submitted.")
        source = run.model.removeprefix(RUN_MODEL_PREFIX)
        if (
            run.model.startswith(RUN_MODEL_PREFIX)
            and source not in in_experiment
            and (Path(runs_dir) / "runs").is_dir()
        ):
            try:
                trained_summary(RunLayout(runs_dir, source))
            except InvalidInputError as exc:
                owner = None if RunLayout(runs_dir, source).root.exists() else _recording_experiment(runs_dir, source)
                problem = (
                    f"run {source} is a run of experiment {owner} but never trained (it failed before training, or "
                    f"has not started): see `bert-eval status {owner}`, fix it and resubmit that experiment"
                    if owner is not None
                    else str(exc)
                )
                raise SubmissionError(
                    f"runs[{index}] (run_id {run.id!r}): model: {problem.rstrip('.')}. Nothing was submitted."
                ) from None


def _recording_experiment(runs_dir: Path, run_id: str) -> str | None:
    """The experiment whose record (`experiments/<id>.json`) lists `run_id`, if any."""
    for record in sorted((Path(runs_dir) / "experiments").glob("*.json")):
        if "." in record.stem:  # <id>.summary.json, <id>.search.json, <id>.superseded-<digest>.json
            continue
        try:
            if run_id in json.loads(record.read_text()).get("run_ids", ()):
                return record.stem
        except (OSError, ValueError, AttributeError):
            continue
    return None


async def start_experiment(
    client: Client, experiment: Experiment, settings: Settings, *, claim: Claim = "new"
) -> WorkflowHandle:
    """Start the coordinator, or attach to it if this same experiment is already running.

    An experiment id is a claim on one set of runs: a running coordinator of the id with other runs is never
    attached to, and a finished one is superseded only with `claim="extend"` or `"replace"`. Raises
    SubmissionError (one line naming the id, the differing runs and the way out) when refused."""
    experiment = experiment.canonical()
    submitted = await submitted_experiment(client, experiment.id)
    if submitted is not None and (submitted.running or claim == "new"):
        if (conflict := claim_conflict(experiment, submitted)) is not None:
            raise SubmissionError(conflict)
    # The coordinator's spans cover every run of the experiment: their run_id lists them all.
    with run_baggage(run_id=",".join(r.id for r in experiment.runs), experiment_id=experiment.id):
        return await _start(client, experiment, settings)


async def _start(client: Client, experiment: Experiment, settings: Settings) -> WorkflowHandle:
    training_queue, eval_queue = task_queues(settings)
    return await client.start_workflow(
        # By name, not by class: the CLI does not import the workflows (and, through them, torch).
        WORKFLOW.coordinator,
        CoordinatorInput(
            experiment=experiment,
            heartbeat_timeout_s=settings.heartbeat_timeout_s,
            training_task_queue=training_queue,
            search_history_limit=settings.search_history_limit,
        ),
        id=coordinator_workflow_id(experiment.id, prefix=_id_prefix()),
        task_queue=eval_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(EXPERIMENT_ID, experiment.id)]),
        result_type=ExperimentResult,
    )


async def missing_workers(client: Client, queues: tuple[str, ...] | None = None) -> list[str]:
    """One line per task queue that no live worker polls (a run waiting on it would wait forever); by
    default this deployment's two queues (BERT_EVAL_TASK_QUEUE_PREFIX)."""
    lines = []
    for queue in queues or tuple(reversed(task_queues(get_settings()))):
        live = False
        for kind in (TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY):
            reply = await client.workflow_service.describe_task_queue(
                DescribeTaskQueueRequest(
                    namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
                ),
                timeout=timedelta(seconds=10),
            )
            now = time.time()
            live = live or any(now - p.last_access_time.ToSeconds() < _POLLER_STALE_S for p in reply.pollers)
        if not live:
            lines.append(
                f"no worker polls task queue {queue!r} in namespace {client.namespace!r}: runs wait until one "
                f"starts (`{_worker_command(queue)}` with TEMPORAL_ADDRESS pointing here)"
            )
    return lines


async def training_progress(client: Client, run_id: str) -> TrainingProgress | None:
    """Live progress: the fine-tune activity's latest heartbeat, else the workflow's `progress` query."""
    handle = client.get_workflow_handle(training_workflow_id(run_id, prefix=_id_prefix()))
    try:
        description = await handle.describe(rpc_timeout=timedelta(seconds=10))
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name == ACTIVITY.fine_tune and pending.heartbeat_details.payloads:
                values = await client.data_converter.decode(pending.heartbeat_details.payloads, [TrainingProgress])
                if values:
                    return values[0]
        return await handle.query(QUERY.progress, result_type=TrainingProgress, rpc_timeout=timedelta(seconds=5))
    except RPCError:
        return None


async def experiment_status(
    client: Client, experiment_id: str
) -> tuple[CoordinatorStatus, dict[str, TrainingProgress]] | None:
    """The coordinator's per-run status and each run's live training progress; None when no such
    experiment answers (not found, or no eval worker to run the query)."""
    handle = client.get_workflow_handle(coordinator_workflow_id(experiment_id, prefix=_id_prefix()))
    try:
        status = await handle.query(QUERY.status, result_type=CoordinatorStatus, rpc_timeout=timedelta(seconds=5))
    except RPCError:
        return None
    progress = {run.run_id: p for run in status.runs if (p := await training_progress(client, run.run_id))}
    return status, progress


async def watch(
    client: Client,
    handle: WorkflowHandle,
    on_update: Callable[[CoordinatorStatus, dict[str, TrainingProgress]], None],
    *,
    interval_s: float = 2.0,
    on_missing_workers: Callable[[list[str]], None] | None = None,
    workers_check_every_s: float = 10.0,
) -> ExperimentResult:
    """Poll status (and live training progress) until the coordinator returns its result; report task
    queues without workers (at once, then whenever that changes)."""
    result_task = asyncio.create_task(handle.result())
    latest = client.get_workflow_handle(handle.id)  # a search that continued as new answers from its newest run
    checked_at, reported = -workers_check_every_s, None
    missing: list[str] | None
    while not result_task.done():
        if on_missing_workers is not None and time.monotonic() - checked_at >= workers_check_every_s:
            checked_at = time.monotonic()
            try:
                missing = await missing_workers(client)
            except RPCError:
                missing = reported
            if missing != reported:
                on_missing_workers(missing or [])
                reported = missing
        try:
            # Bounded: a query waits for a worker, and there may be none (reported above).
            status = await latest.query(QUERY.status, result_type=CoordinatorStatus, rpc_timeout=timedelta(seconds=5))
        except RPCError:
            status = None
        if status is not None and (status.runs or status.search):
            progress = {}
            for run in status.runs:
                if run.phase is RunPhase.training and (p := await training_progress(client, run.run_id)) is not None:
                    progress[run.run_id] = p
            on_update(status, progress)
        await asyncio.wait({result_task}, timeout=interval_s)
    return result_task.result()


async def find_workflows(client: Client, identifier: str) -> list[tuple[str, str, WorkflowExecutionStatus | None]]:
    """Workflows of an experiment id or a run id: (workflow id, type, status)."""
    query = f'{RUN_ID.name} = "{identifier}" OR {EXPERIMENT_ID.name} = "{identifier}"'
    found = []
    async for execution in client.list_workflows(query):
        found.append((execution.id, execution.workflow_type, execution.status))
    return found


async def wait_until_started(
    client: Client, experiment_id: str, *, interval_s: float = 2.0
) -> WorkflowHandle[object, ExperimentResult]:
    """The experiment's coordinator, once it exists (its starter may not have submitted it yet)."""
    handle = client.get_workflow_handle(
        coordinator_workflow_id(experiment_id, prefix=_id_prefix()), result_type=ExperimentResult
    )
    while True:
        try:
            await handle.describe()
            return handle
        except RPCError:
            await asyncio.sleep(interval_s)


@dataclass(frozen=True)
class SavedCheckpoint:
    """A run known to have saved a checkpoint: `step` read live from its fine-tune heartbeat, or, when its
    training had already ended, `summary` from the training result instead."""

    run_id: str
    step: int | None = None
    summary: TrainingSummary | None = None


async def wait_for_checkpoint(
    client: Client, handle: WorkflowHandle, *, interval_s: float = 2.0
) -> SavedCheckpoint | None:
    """The first run of the experiment seen to have saved a checkpoint. Training can end between two
    polls (small runs on fast hardware), so ended runs are read from their training result. None once
    the experiment has ended with no checkpoint anywhere, instead of waiting forever."""
    while True:
        # Read whether the experiment had ended *before* reading its runs: then a miss below is final.
        ended = (await handle.describe()).status != WorkflowExecutionStatus.RUNNING
        try:
            status = await handle.query(QUERY.status, result_type=CoordinatorStatus, rpc_timeout=timedelta(seconds=5))
        except RPCError:
            status = None
        for run in status.runs if status else []:
            progress = await training_progress(client, run.run_id)
            if progress is not None and progress.last_checkpoint is not None:
                return SavedCheckpoint(run.run_id, step=progress.last_checkpoint.step)
            if run.phase in (RunPhase.evaluating, RunPhase.completed):
                training = client.get_workflow_handle(
                    training_workflow_id(run.run_id, prefix=_id_prefix()), result_type=TrainingResult
                )
                try:
                    summary = (await training.result(rpc_timeout=timedelta(seconds=10))).summary
                except (RPCError, WorkflowFailureError):
                    continue
                if summary.checkpoints_saved:
                    return SavedCheckpoint(run.run_id, summary=summary)
        if ended:
            return None
        await asyncio.sleep(interval_s)


async def predict(client: Client, request: PredictInput) -> PredictResult:
    """Label texts with a trained run's final model, on the eval pool. Raises `WorkflowFailureError`
    (its root cause says why: `bert_eval.temporal.failures.root_cause`)."""
    return await client.execute_workflow(
        # By name, like the coordinator: the CLI does not import the workflows.
        WORKFLOW.predict,
        request,
        id=predict_workflow_id(request.run_id, uuid.uuid4().hex[:12], prefix=_id_prefix()),
        task_queue=task_queues(get_settings())[1],
        result_type=PredictResult,
    )
