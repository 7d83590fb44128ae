"""Who owns a run directory: a run's spec is recorded in it, another spec's results are never touched,
and only the current attempt of a run may publish into it.

Fencing: each fine-tune attempt claims the run (`attempt.json`) when it starts; the claim ordered latest
is current (ordered by when Temporal scheduled the attempt, so a stale attempt that claims late still
loses). Checkpoints, the final model and the summary are published only under the run's lock and only
while the attempt's claim is the current one; a superseded attempt's writes are refused and logged.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.records import TrainingSummary
from bert_eval.core.storage.checkpoints import CheckpointStore
from bert_eval.core.storage.fsutil import atomic_write_json
from bert_eval.core.storage.journal import RunJournal
from bert_eval.core.storage.layout import RunLayout
from bert_eval.spec import RunSpec

__all__ = [
    "AttemptFence",
    "StaleAttemptError",
    "claim_run_dir",
    "completed_summary",
    "record_failed_training",
    "run_dir_conflict",
    "trained_summary",
]

# A failed attempt's error, as the journal keeps it and messages quote it.
_MAX_ERROR_CHARS = 300

log = logging.getLogger(__name__)


class StaleAttemptError(RuntimeError):
    """A newer attempt of the same run has started: this one may no longer write the run's results."""


def run_dir_conflict(layout: RunLayout, run: RunSpec) -> str | None:
    """Why this run may not use its directory (outside the runs dir, unreadable record, or results of
    a different spec), or None."""
    if (escape := layout.escape()) is not None:
        return escape
    if not layout.spec_file.exists():
        return None
    try:
        recorded = json.loads(layout.spec_file.read_text())
        if not isinstance(recorded, dict):
            raise ValueError(f"expected a JSON object, found {type(recorded).__name__}")
    except (OSError, ValueError) as exc:
        return (
            f"run {run.id}: its record {layout.spec_file} cannot be read ({exc}); it and the run's other files are "
            "left untouched. Restore or delete that file (or the whole run directory), or choose another run_id."
        )
    if recorded.get("fingerprint") == run.fingerprint() or not _holds_results(layout):
        return None
    return (
        f"run {run.id}: {layout.root} already holds results of a run with a different model, dataset or "
        "hyperparameters; its files are left untouched. Choose another run_id, or delete that directory to "
        "start over."
    )


def _holds_results(layout: RunLayout) -> bool:
    return (
        CheckpointStore(layout.checkpoints).latest_complete() is not None
        or layout.model_dir.exists()
        or layout.summary_file.exists()
        or any(layout.root.glob("eval-*.json"))
    )


def claim_run_dir(layout: RunLayout, run: RunSpec) -> None:
    """Record the run's spec in its directory, or refuse if the directory holds another spec's results.

    A directory whose run produced nothing (it failed on bad input, say) is taken over by the new spec; results
    are never overwritten. Raises InvalidInputError (naming the run and what to do) on a conflict."""
    if (conflict := run_dir_conflict(layout, run)) is not None:
        raise InvalidInputError(conflict)
    layout.ensure_safe()
    record = {"fingerprint": run.fingerprint(), "spec": run.model_dump(mode="json")}
    if not layout.spec_file.exists() or json.loads(layout.spec_file.read_text()) != record:
        atomic_write_json(layout.spec_file, record)


def completed_summary(layout: RunLayout, run: RunSpec) -> TrainingSummary | None:
    """The summary of a finished training of exactly this spec, if there is one."""
    if not (layout.summary_file.is_file() and (layout.model_dir / "config.json").is_file()):
        return None
    payload = json.loads(layout.summary_file.read_text())
    if payload.get("fingerprint") != run.fingerprint():
        return None
    return TrainingSummary.model_validate(payload["summary"])


def trained_summary(layout: RunLayout) -> TrainingSummary:
    """The summary of the run's finished training, whatever its spec; InvalidInputError naming the run and
    what to do when there is no such run, or its training has not finished (still training, or failed)."""
    run_id = layout.run_id
    if not layout.root.is_dir():
        raise InvalidInputError(
            f"run {run_id}: no such run under {layout.runs_dir}; check the id (`bert-eval status {run_id}`) "
            "and that this worker's BERT_EVAL_RUNS_DIR is the volume the run trained on"
        )
    if not (layout.summary_file.is_file() and (layout.model_dir / "config.json").is_file()):
        raise InvalidInputError(f"run {run_id}: {_unfinished_training(layout)}")
    try:
        return TrainingSummary.model_validate(json.loads(layout.summary_file.read_text())["summary"])
    except (ValueError, KeyError) as exc:
        raise InvalidInputError(f"run {run_id}: unreadable training summary {layout.summary_file}: {exc}") from exc


def _unfinished_training(layout: RunLayout) -> str:
    """Why a run has no final model, as its journal tells: its last attempt failed, it paused at a search rung,
    it is training, or it never started."""
    run_id = layout.run_id
    states = ("attempt", "failed", "paused", "completed")
    events = reversed(RunJournal(layout.journal_file).read())
    last: dict[str, Any] = next((e for e in events if e.get("event") in states), {})
    attempt, error = last.get("attempt", "?"), str(last.get("error", "no cause recorded"))[:_MAX_ERROR_CHARS]
    state = {
        "failed": f"it failed (attempt {attempt}: {error}); fix the cause and resubmit its experiment "
        f"(`bert-eval status {run_id}`)",
        "paused": f"it paused at step {last.get('step', '?')} (a search trial that was not promoted); use a trial "
        "that trained to the end",
        "completed": "it completed but its final model or summary is missing; resubmit its experiment to train it "
        "again",
        "attempt": f"it is still training (attempt {attempt}); wait for it (`bert-eval status {run_id}`)",
    }.get(str(last.get("event")), f"it has not started (no attempt is recorded); see `bert-eval status {run_id}`")
    return f"training has not finished (no final model in {layout.model_dir}): {state}"


def record_failed_training(layout: RunLayout, run: RunSpec, *, attempt: int, error: str) -> None:
    """Journal that this attempt of the run's training failed for good, so that a later reader names the run
    as failed rather than still training. Only into the run's own directory (safe, and its spec.json records
    this spec); never raises: the failure itself is what the caller reports."""
    try:
        if layout.escape() is not None or not layout.spec_file.is_file():
            return
        if json.loads(layout.spec_file.read_text()).get("fingerprint") == run.fingerprint():
            RunJournal(layout.journal_file).append("failed", attempt=attempt, error=error[:_MAX_ERROR_CHARS])
    except (OSError, ValueError, AttributeError) as exc:
        log.warning("run %s: could not journal its failed training: %s", run.id, exc)


class AttemptFence:
    """One attempt's claim on a run directory, checked under the run's lock at every publication.

    `attempt` is the Temporal attempt number (named in messages); `scheduled_at` (epoch seconds, default now)
    orders attempts: the latest scheduled is current."""

    def __init__(self, layout: RunLayout, *, attempt: int, scheduled_at: float | None = None) -> None:
        self.layout, self.attempt = layout, attempt
        self.scheduled_at = scheduled_at if scheduled_at is not None else time.time()
        self.token = uuid.uuid4().hex

    def claim(self) -> None:
        """Become the run's current attempt, unless an attempt scheduled later already is."""
        with self._locked():
            current = self._current()
            if current is not None and float(current.get("scheduled_at", 0.0)) > self.scheduled_at:
                raise self._refused("start", current)
            atomic_write_json(
                self.layout.attempt_file,
                {
                    "token": self.token,
                    "attempt": self.attempt,
                    "scheduled_at": self.scheduled_at,
                    "claimed_at": time.time(),
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                },
            )

    def is_current(self) -> bool:
        """Whether this attempt's claim is the run's current one (read without the lock)."""
        current = self._current()
        return current is not None and current.get("token") == self.token

    @contextlib.contextmanager
    def publishing(self, action: str) -> Iterator[None]:
        """Hold the run's lock during `action` (a publication); StaleAttemptError if this attempt is
        superseded."""
        with self._locked():
            current = self._current()
            if current is None or current.get("token") != self.token:
                raise self._refused(action, current)
            yield

    def _refused(self, action: str, current: dict[str, Any] | None) -> StaleAttemptError:
        holder = (
            f"attempt {current.get('attempt')} (pid {current.get('pid')} on {current.get('host')})"
            if current
            else "no attempt"
        )
        message = (
            f"run {self.layout.run_id}: attempt {self.attempt} may not {action}: {holder} is the run's current "
            "attempt, so this one is stale (its worker lost contact and the run was handed to another). Nothing was "
            "written; this attempt stops."
        )
        log.warning(message)
        return StaleAttemptError(message)

    def _current(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.layout.attempt_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # torn by a crash mid-write cannot happen (atomic), but never trust it

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.layout.ensure_safe()
        fd = os.open(self.layout.lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
