"""What a fine-tune tells the outside world: one stream of events, `TrainingObserver`.

The core emits each event once, to one observer. `ProgressTracker` folds the events into the run's
`TrainingProgress` (what heartbeats and the CLI show); `Observers` fans one stream out to several
observers (the tracker and, in a worker, the Prometheus metrics). All methods are called on the
training thread except `checkpoint_saved`, which the background checkpoint writer calls from its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from bert_eval.core.records import CheckpointRef, TrainingProgress

__all__ = [
    "CheckpointEvent",
    "LogWindow",
    "Observers",
    "ProgressCallback",
    "ProgressTracker",
    "ResumeEvent",
    "TrainingObserver",
]

ProgressCallback = Callable[[TrainingProgress], None]


@dataclass(frozen=True)
class LogWindow:
    """One logging window (`logging_steps` steps), read from the device once."""

    step: int
    loss: float  # the window's last step
    mean_loss: float  # over the window
    learning_rate: float
    samples_per_s: float
    tokens_per_s: float  # real (non-padding) tokens


@dataclass(frozen=True)
class CheckpointEvent:
    """A checkpoint published: its step and path, how long it took, how much of that training waited."""

    step: int
    path: str
    seconds: float  # copy to host + write + fsync + publish
    blocked_seconds: float  # of which training waited
    bytes: int


@dataclass(frozen=True)
class ResumeEvent:
    """Training resumed from a checkpoint in a new attempt, with the time and steps the interruption cost."""

    from_step: int
    attempt: int
    recovery_seconds: float | None  # previous attempt's last heartbeat → first resumed step
    steps_lost: int | None


class TrainingObserver:
    """No-op base: override what you need."""

    def phase(self, phase: str) -> None:
        """loading, training, saving, completed, paused (at a search rung), interrupted."""

    def started(self, total_steps: int, step: int) -> None:
        """Training starts (at `step` > 0 when resuming) towards `total_steps`."""

    def step(self, step: int, epoch: float) -> None:
        """An optimizer step finished; `epoch` is fractional."""

    def logged(self, window: LogWindow) -> None:
        """A logging window closed, with its loss, learning rate and throughput."""

    def checkpoint_saved(self, event: CheckpointEvent) -> None:
        """A checkpoint was published (called from the checkpoint writer's thread)."""

    def resumed(self, event: ResumeEvent) -> None:
        """Training resumed from a checkpoint left by an earlier attempt."""


class Observers(TrainingObserver):
    """Forwards every event to each observer, in order."""

    def __init__(self, *observers: TrainingObserver) -> None:
        self._observers = observers

    def phase(self, phase: str) -> None:
        """Forward the phase change to each observer."""
        for observer in self._observers:
            observer.phase(phase)

    def started(self, total_steps: int, step: int) -> None:
        """Forward the start of training to each observer."""
        for observer in self._observers:
            observer.started(total_steps, step)

    def step(self, step: int, epoch: float) -> None:
        """Forward the finished step to each observer."""
        for observer in self._observers:
            observer.step(step, epoch)

    def logged(self, window: LogWindow) -> None:
        """Forward the logging window to each observer."""
        for observer in self._observers:
            observer.logged(window)

    def checkpoint_saved(self, event: CheckpointEvent) -> None:
        """Forward the published checkpoint to each observer."""
        for observer in self._observers:
            observer.checkpoint_saved(event)

    def resumed(self, event: ResumeEvent) -> None:
        """Forward the resume to each observer."""
        for observer in self._observers:
            observer.resumed(event)


class ProgressTracker(TrainingObserver):
    """The run's latest `TrainingProgress`, built from the events; each change goes to `on_change`.

    Updated from the training thread and the checkpoint writer's thread, hence the lock.
    """

    def __init__(
        self,
        run_id: str,
        *,
        attempt: int,
        resuming_from: CheckpointRef | None = None,
        on_change: ProgressCallback | None = None,
    ) -> None:
        self.progress = TrainingProgress(
            run_id=run_id,
            attempt=attempt,
            phase="loading",
            last_checkpoint=resuming_from,
            resumed_from_step=resuming_from.step if resuming_from else None,
        )
        self._on_change = on_change
        self._lock = threading.Lock()

    def _update(self, **changes: object) -> None:
        with self._lock:
            self.progress = self.progress.model_copy(update=changes)
            progress = self.progress
        if self._on_change is not None:
            self._on_change(progress)

    def phase(self, phase: str) -> None:
        """Record the phase (one `TrainingProgress` knows; "interrupted" leaves it unchanged)."""
        if phase in ("loading", "training", "saving", "completed", "paused", "failed"):
            self._update(phase=phase)

    def started(self, total_steps: int, step: int) -> None:
        """Record the training phase, the total steps and the starting step."""
        self._update(phase="training", total_steps=total_steps, step=step)

    def step(self, step: int, epoch: float) -> None:
        """Record the current step and epoch."""
        self._update(step=step, epoch=epoch)

    def logged(self, window: LogWindow) -> None:
        """Record the window's last loss and learning rate."""
        self._update(loss=window.loss, learning_rate=window.learning_rate)

    def checkpoint_saved(self, event: CheckpointEvent) -> None:
        """Record the newest published checkpoint."""
        self._update(last_checkpoint=CheckpointRef(step=event.step, path=event.path))
