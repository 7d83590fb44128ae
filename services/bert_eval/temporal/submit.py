"""Client-side operations the CLI and starter Job use: submit, watch, look up status."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from bert_eval.core.layout import RunLayout
from bert_eval.core.rundir import run_dir_conflict
from bert_eval.settings import EVAL_TASK_QUEUE, Settings
from bert_eval.telemetry import run_baggage
from bert_eval.temporal.workflows import (
    EXPERIMENT_ID,
    CoordinatorWorkflow,
    TrainingWorkflow,
    coordinator_workflow_id,
    training_workflow_id,
)
from bert_eval.types import (
    CoordinatorInput,
    CoordinatorStatus,
    Experiment,
    ExperimentResult,
    RunPhase,
    TrainingProgress,
)

__all__ = ["SubmissionError", "check_runs_dir", "find_workflows", "start_experiment", "training_progress", "watch"]


class SubmissionError(ValueError):
    pass


def check_runs_dir(experiment: Experiment, runs_dir: Path) -> None:
    """Reject, before submitting, a run id whose directory holds another spec's results (when visible here)."""
    for run in experiment.runs:
        if (conflict := run_dir_conflict(RunLayout(runs_dir, run.id), run)) is not None:
            raise SubmissionError(f"{conflict} Nothing was submitted.")


async def start_experiment(client: Client, experiment: Experiment, settings: Settings) -> WorkflowHandle:
    """Start the coordinator, or attach to it if this experiment is already running."""
    experiment = experiment.canonical()
    # The coordinator's spans cover every run of the experiment: their run_id lists them all.
    with run_baggage(run_id=",".join(r.id for r in experiment.runs), experiment_id=experiment.id):
        return await _start(client, experiment, settings)


async def _start(client: Client, experiment: Experiment, settings: Settings) -> WorkflowHandle:
    return await client.start_workflow(
        CoordinatorWorkflow.run,
        CoordinatorInput(experiment=experiment, heartbeat_timeout_s=settings.heartbeat_timeout_s),
        id=coordinator_workflow_id(experiment.id),
        task_queue=EVAL_TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        search_attributes=TypedSearchAttributes([SearchAttributePair(EXPERIMENT_ID, experiment.id)]),
        result_type=ExperimentResult,
    )


async def training_progress(client: Client, run_id: str) -> TrainingProgress | None:
    """Live progress: the fine-tune activity's latest heartbeat, else the workflow's `progress` query."""
    handle = client.get_workflow_handle(training_workflow_id(run_id))
    try:
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            if pending.activity_type.name == "fine_tune" and pending.heartbeat_details.payloads:
                values = await client.data_converter.decode(pending.heartbeat_details.payloads, [TrainingProgress])
                if values:
                    return values[0]
        return await handle.query(TrainingWorkflow.progress)
    except RPCError:
        return None


async def watch(
    client: Client,
    handle: WorkflowHandle,
    on_update: Callable[[CoordinatorStatus, dict[str, TrainingProgress]], None],
    *,
    interval_s: float = 2.0,
) -> ExperimentResult:
    """Poll status (and live training progress) until the coordinator returns its result."""
    result_task = asyncio.create_task(handle.result())
    while not result_task.done():
        try:
            status = await handle.query(CoordinatorWorkflow.status)
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
    query = f'BertRunId = "{identifier}" OR BertExperimentId = "{identifier}"'
    found = []
    async for execution in client.list_workflows(query):
        found.append((execution.id, execution.workflow_type, execution.status))
    return found
