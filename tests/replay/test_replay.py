"""Recorded histories of real runs replayed against the current workflow code (no server needed).

A change that would break a workflow already running in production (a different command sequence
without `workflow.patched`) fails here. docs/versioning.md says when to patch and how to record.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from bert_eval import telemetry
from bert_eval.temporal.workflows import (
    LEGACY_WORKFLOWS,
    BertEvalWorkflow,
    CheckpointedBertTrainingWorkflow,
    CoordinatorWorkflow,
)

HISTORIES = Path(__file__).parent / "histories"
RECORDED = sorted(HISTORIES.glob("*.json"))


def test_histories_are_recorded_for_every_workflow_type() -> None:
    types = {
        json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"]["workflowType"]["name"]
        for path in RECORDED
    }
    # Before and after the children took the reference design's type names (docs/versioning.md).
    assert {
        "CoordinatorWorkflow",
        "TrainingWorkflow",
        "EvalWorkflow",
        "CheckpointedBertTrainingWorkflow",
        "BertEvalWorkflow",
    } <= types


@pytest.mark.parametrize("path", RECORDED, ids=[path.stem for path in RECORDED])
def test_recorded_history_replays_on_current_workflows(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        # What a worker registers: the legacy types replay histories recorded before the type names changed.
        workflows=[CoordinatorWorkflow, CheckpointedBertTrainingWorkflow, BertEvalWorkflow, *LEGACY_WORKFLOWS],
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor(telemetry.tracer())],
    )
    result = asyncio.run(replayer.replay_workflow(history, raise_on_replay_failure=False))
    assert result.replay_failure is None, f"{path.name} no longer replays: {result.replay_failure}"
