"""Client-side operations the CLI and starter Job use: submit, watch, look up status."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from bert_eval.core.layout import RunLayout
from bert_eval.core.rundir import run_dir_conflict
from bert_eval.settings import Settings, get_settings, task_queues
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
    training_workflow_id,
)
from bert_eval.core.records import TrainingProgress
from bert_eval.spec import Experiment
from bert_eval.temporal.payloads import CoordinatorInput, CoordinatorStatus, ExperimentResult, RunPhase

__all__ = [
    "SubmissionError",
    "check_runs_dir",
    "find_workflows",
    "missing_workers",
    "start_experiment",
    "training_progress",
    "watch",
]

# Which worker serves each task queue, for the "nobody polls" message.
_QUEUE_WORKERS = {EVAL_TASK_QUEUE: "bert-eval worker eval", TRAINING_TASK_QUEUE: "bert-eval worker training"}

# A poller that has not polled for this long is gone (long polls last about a minute).
_POLLER_STALE_S = 90.0


def _worker_command(queue: str) -> str:
    return next((command for name, command in _QUEUE_WORKERS.items() if queue.endswith(name)), "bert-eval worker")


class SubmissionError(ValueError):
    pass


def check_runs_dir(experiment: Experiment, runs_dir: Path) -> None:
    """Reject, before submitting, a run id whose directory holds another spec's results (when visible here)."""
    for run in experiment.runs:
        layout = RunLayout(runs_dir, run.id)
        conflict = run_dir_conflict(layout, run)  # a corrupt spec.json is a conflict too
        if conflict is not None:
            raise SubmissionError(f"{conflict} Nothing was submitted.")


async def start_experiment(client: Client, experiment: Experiment, settings: Settings) -> WorkflowHandle:
    """Start the coordinator, or attach to it if this experiment is already running."""
    experiment = experiment.canonical()
    # The coordinator's spans cover every run of the experiment: their run_id lists them all.
    with run_baggage(run_id=",".join(r.id for r in experiment.runs), experiment_id=experiment.id):
        return await _start(client, experiment, settings)


async def _start(client: Client, experiment: Experiment, settings: Settings) -> WorkflowHandle:
    training_queue, eval_queue = task_queues(settings)
    return await client.start_workflow(
        # By name, not by class: the CLI does not import the workflows (and, through them, torch).
        WORKFLOW.coordinator,
        CoordinatorInput(
            experiment=experiment, heartbeat_timeout_s=settings.heartbeat_timeout_s, training_task_queue=training_queue
        ),
        id=coordinator_workflow_id(experiment.id),
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
                DescribeTaskQueueRequest(namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind),
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
    handle = client.get_workflow_handle(training_workflow_id(run_id))
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
    checked_at, reported = -workers_check_every_s, None
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
            status = await handle.query(QUERY.status, result_type=CoordinatorStatus, rpc_timeout=timedelta(seconds=5))
        except RPCError:
            status = None
        if status is not None and status.runs:
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
