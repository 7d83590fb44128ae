"""`activity_attempts` reads the attempt numbers of one activity type out of a workflow's history."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory

from bert_eval.temporal.history import activity_attempts

RECORDED = Path(__file__).parents[1] / "replay" / "histories" / "experiment-v5-first.json"


class _Handle:
    def __init__(self, history: WorkflowHistory) -> None:
        self.history = history

    async def fetch_history(self) -> WorkflowHistory:
        return self.history


class _Client:
    """What `activity_attempts` asks of a client: a handle whose history is `history`."""

    def __init__(self, history: WorkflowHistory) -> None:
        self.history = history

    def get_workflow_handle(self, workflow_id: str) -> Any:
        return _Handle(self.history)


def _retried(document: dict[str, Any], activity_type: str) -> dict[str, Any]:
    """`document` with a second start (attempt 2) of its first `activity_type` activity appended."""
    events = document["events"]
    scheduled = next(
        e
        for e in events
        if e.get("activityTaskScheduledEventAttributes", {}).get("activityType", {}).get("name") == activity_type
    )
    started = next(
        e
        for e in events
        if e.get("activityTaskStartedEventAttributes", {}).get("scheduledEventId") == scheduled["eventId"]
    )
    again = json.loads(json.dumps(started))
    again["eventId"] = str(int(events[-1]["eventId"]) + 1)
    again["activityTaskStartedEventAttributes"]["attempt"] = 2
    return {**document, "events": [*events, again]}


def _attempts(document: dict[str, Any], activity_type: str) -> list[int]:
    history = WorkflowHistory.from_json("wf", json.dumps(document))
    return asyncio.run(activity_attempts(_Client(history), "wf", activity_type))  # type: ignore[arg-type]


def test_each_start_of_the_named_activity_is_counted_with_its_attempt() -> None:
    recorded = json.loads(RECORDED.read_text())
    assert _attempts(recorded, "snapshot_dataset") == [1, 1]  # the experiment's two runs, each snapshot once
    assert _attempts(recorded, "record_experiment") == [1]
    assert _attempts(recorded, "evaluate_model") == []
    assert _attempts(_retried(recorded, "snapshot_dataset"), "snapshot_dataset") == [1, 1, 2]
