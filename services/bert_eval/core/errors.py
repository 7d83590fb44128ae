"""Errors the core raises. `InvalidInputError` means retrying cannot help (bad data, bad model, bad run)."""

from __future__ import annotations

__all__ = ["InvalidInputError", "TrainingInterrupted"]


class InvalidInputError(ValueError):
    """The run's input is wrong; retrying will not help. The message names the run and the cause."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on request (cancellation or worker shutdown) after saving a checkpoint."""

    def __init__(self, run_id: str, step: int, checkpoint: str | None) -> None:
        self.run_id, self.step, self.checkpoint = run_id, step, checkpoint
        super().__init__(f"run {run_id}: training stopped at step {step} on request; checkpoint {checkpoint or 'none'}")
