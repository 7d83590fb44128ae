"""What actually went wrong, read out of Temporal's layered failures.

A failed activity reaches its workflow as `ActivityError` -> `ApplicationError` (-> its causes), a failed
child as `ChildWorkflowError` -> ..., a failed workflow reaches a client as `WorkflowFailureError` -> ...
The message worth showing is the innermost real failure's, not the wrappers'. The walk is a pure
function of the exception objects, so workflows use it too (deterministic, sandbox-safe).
"""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError, ChildWorkflowError, FailureError

__all__ = ["root_cause"]


def root_cause(exc: BaseException, *, with_type: bool = True) -> str:
    """The message of the innermost failure along `__cause__` that is not a wrapper (activity or child
    workflow error) and says something; `str(exc)` when there is none. With `with_type`, an application
    error's message keeps its type prefix (`InvalidInput: ...`), as `str()` gives it."""
    message = str(exc)
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, FailureError) and not isinstance(cause, (ActivityError, ChildWorkflowError)):
            text = cause.message if isinstance(cause, ApplicationError) and not with_type else str(cause)
            message = text or message
        cause = cause.__cause__
    return message
