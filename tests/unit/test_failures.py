"""The error a user reads is the innermost failure's, not the layers Temporal wraps it in."""

from __future__ import annotations

from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutError, TimeoutType

from bert_eval.temporal.failures import root_cause


def _activity_error(cause: BaseException) -> ActivityError:
    error = ActivityError(
        "Activity task failed",
        scheduled_event_id=1,
        started_event_id=2,
        identity="w",
        activity_type="predict",
        activity_id="1",
        retry_state=RetryState.NON_RETRYABLE_FAILURE,
    )
    error.__cause__ = cause
    return error


def test_the_innermost_application_error_is_the_cause() -> None:
    failure = _activity_error(ApplicationError("run r: no such run", type="InvalidInput", non_retryable=True))
    assert root_cause(failure) == "InvalidInput: run r: no such run"
    assert root_cause(WorkflowFailureError(cause=failure), with_type=False) == "run r: no such run"


def test_a_timeout_under_an_activity_error_is_named() -> None:
    timeout = TimeoutError("activity StartToClose timeout", type=TimeoutType.START_TO_CLOSE, last_heartbeat_details=[])
    assert root_cause(_activity_error(timeout)) == "activity StartToClose timeout"


def test_an_empty_inner_message_keeps_the_last_one_that_says_something() -> None:
    outer = ApplicationError("run r: evaluation failed")
    outer.__cause__ = ApplicationError("")
    assert root_cause(_activity_error(outer), with_type=False) == "run r: evaluation failed"


def test_without_any_failure_the_exception_itself_is_the_cause() -> None:
    assert root_cause(RuntimeError("boom")) == "boom"
