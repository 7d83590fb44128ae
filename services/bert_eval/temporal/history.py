"""Reading a workflow's recorded history from a client: how often an activity was started (its retries).

The search benchmark's kill row and the fault tests count retried activities this way; the history is the
one record of an attempt that died before it wrote anything of its own.
"""

from __future__ import annotations

from temporalio.client import Client

__all__ = ["activity_attempts"]


async def activity_attempts(client: Client, workflow_id: str, activity_type: str) -> list[int]:
    """The attempt number of every start of the activity named `activity_type` in the history of the workflow
    `workflow_id`, in the history's order: `[1, 2]` is one activity retried once, `[1, 1]` two activities.

    Raises the client's `RPCError` when there is no such workflow."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    scheduled = {
        event.event_id
        for event in history.events
        if event.HasField("activity_task_scheduled_event_attributes")
        and event.activity_task_scheduled_event_attributes.activity_type.name == activity_type
    }
    return [
        event.activity_task_started_event_attributes.attempt
        for event in history.events
        if event.HasField("activity_task_started_event_attributes")
        and event.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]
