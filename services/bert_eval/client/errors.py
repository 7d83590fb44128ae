"""The errors the Python client raises beyond `ValueError` for bad input."""

from __future__ import annotations

__all__ = ["ClientConnectionError", "ExperimentFailedError", "PredictionError"]


class ClientConnectionError(ConnectionError):
    """Temporal could not be reached at the address and namespace the client was given."""


class ExperimentFailedError(RuntimeError):
    """The experiment's coordinator workflow failed, was cancelled or was terminated: no result exists.

    `experiment_id` names the experiment; the message carries the root cause."""

    def __init__(self, experiment_id: str, cause: str) -> None:
        self.experiment_id = experiment_id
        super().__init__(f"experiment {experiment_id}: {cause}")


class PredictionError(RuntimeError):
    """Predicting with a run's model failed (the message says why, e.g. the run has no final model)."""

    def __init__(self, run_id: str, cause: str) -> None:
        self.run_id = run_id
        super().__init__(f"predict with run {run_id}: {cause}")
