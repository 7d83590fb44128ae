"""Workflow-side helpers every workflow shares: the activity retry rules, one activity call of a run, the
run's snapshot activity, and the search attributes of a run's children (workflow code: deterministic)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from bert_eval.core.data.snapshot import SnapshotInput
    from bert_eval.core.errors import DETERMINISTIC_MAX_ATTEMPTS
    from bert_eval.core.records import SnapshotResult
    from bert_eval.spec import RunSpec
    from bert_eval.temporal.activities import EvalActivities
    from bert_eval.temporal.names import DETERMINISTIC_FAILURE, EXPERIMENT_ID, INVALID_INPUT, RUN_ID, TIMEOUTS

__all__ = [
    "FAIL_WORKFLOW_ON",
    "RETRY",
    "activity_of_run",
    "bounded_deterministic",
    "run_attributes",
    "snapshot_mismatch",
    "snapshot_of",
]

T = TypeVar("T")

# Lost workers (SIGKILL, heartbeat timeout) and transient outages retry without limit, with backoff;
# bad input never retries; a deterministic failure fails the activity at once and
# `bounded_deterministic` decides whether to run it again.
RETRY = RetryPolicy(
    initial_interval=TIMEOUTS.retry_initial,
    backoff_coefficient=2.0,
    maximum_interval=TIMEOUTS.retry_maximum,
    maximum_attempts=0,
    non_retryable_error_types=[INVALID_INPUT, DETERMINISTIC_FAILURE],
)
# A payload that does not parse into the workflow's input fails the workflow, not its task (which
# Temporal would retry forever while the client waits).
FAIL_WORKFLOW_ON = [ValidationError]


async def activity_of_run(
    run_id: str,
    method: Callable[[Any, Any], Awaitable[T]],
    arg: Any,
    *,
    start_to_close: timedelta,
    heartbeat_timeout: timedelta | None = None,
    task_queue: str | None = None,
) -> T:
    """One activity call of a run, with the retry rules above (deterministic failures bounded)."""
    return await bounded_deterministic(
        run_id,
        lambda: workflow.execute_activity_method(
            method,
            arg,
            task_queue=task_queue or workflow.info().task_queue,
            start_to_close_timeout=start_to_close,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=RETRY,
        ),
    )


async def bounded_deterministic(run_id: str, call: Callable[[], Awaitable[T]]) -> T:
    """Run an activity; when it fails deterministically, run it again up to DETERMINISTIC_MAX_ATTEMPTS
    times in all (a new activity each time, so lost-worker retries inside each stay unlimited)."""
    for attempt in range(1, DETERMINISTIC_MAX_ATTEMPTS + 1):
        try:
            return await call()
        except ActivityError as exc:
            cause = exc.cause
            if not (isinstance(cause, ApplicationError) and cause.type == DETERMINISTIC_FAILURE):
                raise
            if attempt >= DETERMINISTIC_MAX_ATTEMPTS:
                raise ApplicationError(
                    f"{cause.message} (failed the same way {attempt} times; not retried further)",
                    type=DETERMINISTIC_FAILURE,
                    non_retryable=True,
                ) from None
            workflow.logger.warning(
                "run %s: attempt %d of %d failed (%s); trying again",
                run_id,
                attempt,
                DETERMINISTIC_MAX_ATTEMPTS,
                cause.message,
            )
            await workflow.sleep(timedelta(seconds=2**attempt))
    raise AssertionError("unreachable")


async def snapshot_of(run: RunSpec, *, heartbeat_timeout_s: float, task_queue: str | None = None) -> SnapshotResult:
    """The run's data snapshot, taken by the eval pool."""
    return await activity_of_run(
        run.id,
        EvalActivities.snapshot_dataset,
        SnapshotInput.for_run(run),
        task_queue=task_queue,
        start_to_close=TIMEOUTS.snapshot_start_to_close,
        heartbeat_timeout=timedelta(seconds=heartbeat_timeout_s),
    )


def run_attributes(experiment_id: str, run_id: str) -> TypedSearchAttributes:
    """The search attributes a run's child workflows carry (run id and experiment id), for visibility queries."""
    return TypedSearchAttributes(
        [SearchAttributePair(RUN_ID, run_id), SearchAttributePair(EXPERIMENT_ID, experiment_id)]
    )


def snapshot_mismatch(run_id: str, pinned: str, actual: str) -> str:
    """The refusal when a run's data selection no longer gives the snapshot its input pinned."""
    return (
        f"run {run_id}: dataset_snapshot pins snapshot {pinned}, but the run's data selection gives snapshot "
        f"{actual}; the dataset or selection (max_train_samples, max_eval_samples, split, seed) differs from the "
        "pinned one. Restore them, or drop dataset_snapshot"
    )
