"""Errors the core raises, classified by what a retry can do about them.

- `InvalidInputError`: the run's input is wrong (bad data, bad model, bad spec). Retrying cannot help:
  the run fails at once, naming the run and the cause.
- `TransientError`: an outage outside the run (network, model hub, shared volume I/O). Retried with
  backoff, without an attempt limit: the run continues when the outage ends.
- `DeterministicFailure`: the same input fails the same way on any worker (a limit the spec exceeds, a
  full or read-only volume). Retried a small bounded number of times (`DETERMINISTIC_MAX_ATTEMPTS`),
  then the run fails with the cause. An unexpected exception is treated the same way.
- `TrainingInterrupted`: training stopped on request after saving a checkpoint (not a failure).

A worker killed or timed out (SIGKILL, lost heartbeat) is none of these: such attempts are retried
without limit, so a run survives any number of worker deaths.

`classify` maps any exception to one of these kinds; the Temporal layer turns the kind into a retry
decision, so the core never imports Temporal.
"""

from __future__ import annotations

import errno
import re
from typing import ClassVar, Literal

__all__ = [
    "DETERMINISTIC_MAX_ATTEMPTS",
    "DeterministicFailure",
    "ErrorKind",
    "InvalidInputError",
    "TrainingInterrupted",
    "TransientError",
    "classify",
    "classify_os_error",
    "naming_run",
]

ErrorKind = Literal["invalid_input", "transient", "deterministic"]

# How many times a run tries an input that failed deterministically before the run fails.
DETERMINISTIC_MAX_ATTEMPTS = 3


class InvalidInputError(ValueError):
    """The run's input is wrong; retrying will not help. The message names the run and the cause."""

    error_type: ClassVar[str] = "InvalidInput"


class TransientError(RuntimeError):
    """An outage outside the run (network, hub, volume I/O); retried with backoff until it ends."""

    error_type: ClassVar[str] = "TransientFailure"


class DeterministicFailure(RuntimeError):
    """The same input fails the same way anywhere; retried a few times, then the run fails."""

    error_type: ClassVar[str] = "DeterministicFailure"


class TrainingInterrupted(RuntimeError):
    """Training stopped on request (cancellation or worker shutdown) after saving a checkpoint."""

    error_type: ClassVar[str] = "TrainingInterrupted"

    def __init__(self, run_id: str, step: int, checkpoint: str | None) -> None:
        self.run_id, self.step, self.checkpoint = run_id, step, checkpoint
        super().__init__(f"run {run_id}: training stopped at step {step} on request; checkpoint {checkpoint or 'none'}")


def naming_run(run_id: str, message: str) -> str:
    """`message`, prefixed with `run <run_id>: ` unless it already names the run."""
    return message if re.search(rf"\brun {re.escape(run_id)}\b", message) else f"run {run_id}: {message}"


# Errnos of a network or shared-volume outage: the same call can succeed later.
_TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "ECONNABORTED",
        "ETIMEDOUT",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "ENETDOWN",
        "EPIPE",
        "EAGAIN",
        "EIO",
        "ESTALE",
        "EBUSY",
    )
    if hasattr(errno, name)
)
# Errnos of the runs volume itself (full, read-only, not ours): every retry fails the same way until
# an operator acts, so a few attempts, then a failure that says what to fix.
_VOLUME_ERRNOS = {
    errno.ENOSPC: "the volume is full; free space or grow the volume, then resubmit",
    errno.EROFS: "the volume is read-only; mount it read-write, then resubmit",
    errno.EACCES: "permission denied; give the worker's user write access, then resubmit",
    errno.EPERM: "operation not permitted; give the worker's user write access, then resubmit",
    errno.EDQUOT: "the disk quota is exhausted; free space or raise the quota, then resubmit",
}


def classify_os_error(exc: OSError, run_id: str) -> TransientError | DeterministicFailure:
    """An OSError as the core should raise it: transient for outages, deterministic for volume limits."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in _VOLUME_ERRNOS:
        return DeterministicFailure(f"run {run_id}: {exc.strerror or exc}{where}: {_VOLUME_ERRNOS[exc.errno]}")
    if exc.errno not in _TRANSIENT_ERRNOS:
        return DeterministicFailure(f"run {run_id}: {exc.strerror or exc}{where}")
    return TransientError(f"run {run_id}: I/O error{where}: {exc.strerror or exc}; retrying with backoff")


def classify(exc: BaseException) -> ErrorKind:
    """What a retry can do about `exc`: nothing (invalid_input), wait it out (transient), or a few tries."""
    if isinstance(exc, InvalidInputError):
        return "invalid_input"
    if isinstance(exc, TransientError):
        return "transient"
    if isinstance(exc, DeterministicFailure):
        return "deterministic"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "transient"
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return "transient"
    return "deterministic"
