"""What a fine-tune tells the outside world besides its progress: the observer interface.

The core calls these methods; it never writes metrics itself. The activity layer implements them as
Prometheus metrics (temporal/activities.py); a test or notebook can record them, or pass nothing.
All methods are called on the training thread except `checkpoint_saved`, which the background
checkpoint writer calls from its own thread.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckpointEvent", "LogWindow", "ResumeEvent", "TrainingObserver"]


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
    step: int
    path: str
    seconds: float  # copy to host + write + fsync + publish
    blocked_seconds: float  # of which training waited
    bytes: int


@dataclass(frozen=True)
class ResumeEvent:
    from_step: int
    attempt: int
    recovery_seconds: float | None  # previous attempt's last heartbeat → first resumed step
    steps_lost: int | None


class TrainingObserver:
    """No-op base: override what you need."""

    def phase(self, phase: str) -> None:
        """loading, training, saving, completed, interrupted."""

    def started(self, total_steps: int) -> None:
        pass

    def step(self, step: int, epoch: float) -> None:
        pass

    def logged(self, window: LogWindow) -> None:
        pass

    def checkpoint_saved(self, event: CheckpointEvent) -> None:
        pass

    def resumed(self, event: ResumeEvent) -> None:
        pass
