"""Activities that put an experiment's results in MLflow: logging its runs, registering its winner.

Both read what the runs volume holds, so they run after training and evaluation and never delay them. An
unreachable tracking server is a transient failure (retried with backoff, the coordinator bounds the
retries) and is written to the experiment's `experiments/<id>.mlflow.json`, which `status` reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from bert_eval import telemetry
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.storage.fsutil import atomic_write_json
from bert_eval.temporal.activities import _in_thread
from bert_eval.temporal.names import ACTIVITY, INVALID_INPUT, TRANSIENT_FAILURE
from bert_eval.temporal.payloads import Payload
from bert_eval.tracking.mlflow_logging import log_experiment, mlflow_record, tracking_record_file
from bert_eval.tracking.registry import choose_winner, register_winner
from bert_eval.tracking.server import TrackingUnavailable, check_tracking_server, resolve_tracking_uri

__all__ = ["RegisterInput", "RegisterResult", "TrackingActivities", "TrackingInput", "TrackingResult"]

log = telemetry.get_logger(__name__)


class TrackingInput(Payload):
    """What `log_to_mlflow` logs: an experiment, to a tracking server and an MLflow experiment."""

    experiment_id: str
    uri: str | None = None  # None: this worker's MLFLOW_TRACKING_URI
    mlflow_experiment: str | None = None  # None: the bert-eval experiment id


class TrackingResult(Payload):
    """Where an experiment was logged: the MLflow experiment, the parent run and each run's MLflow run id."""

    uri: str
    mlflow_experiment_id: str
    parent_run_id: str
    runs: dict[str, str]  # bert-eval run id -> MLflow run id
    seconds: float


class RegisterInput(Payload):
    """What `register_in_mlflow` registers: the experiment's winner, as model `name` with `alias`."""

    experiment_id: str
    uri: str
    runs: dict[str, str]  # bert-eval run id -> MLflow run id (from log_to_mlflow)
    name: str
    alias: str
    split: str


class RegisterResult(Payload):
    """The registered model version, the run it came from and the alias it holds."""

    name: str
    version: str
    run_id: str
    alias: str
    alias_moved: bool
    sentence: str


class TrackingActivities:
    """Activities of the eval pool that log to MLflow (a thread each: the MLflow client is synchronous)."""

    def __init__(self, *, runs_dir: Path, default_uri: str | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.default_uri = default_uri

    @activity.defn(name=ACTIVITY.log_to_mlflow)
    async def log_to_mlflow(self, request: TrackingInput) -> TrackingResult:
        """Log the finished experiment's runs to MLflow; a retry finds the MLflow runs made before."""
        with telemetry.bind_run(experiment_id=request.experiment_id, attempt=activity.info().attempt):
            uri = self._uri(request.experiment_id, request.uri)

            def log_all() -> TrackingResult:
                self._reachable(request.experiment_id, uri)
                started = time.perf_counter()
                logged = log_experiment(
                    self.runs_dir,
                    request.experiment_id,
                    uri=uri,
                    mlflow_experiment=request.mlflow_experiment,
                    on_run=lambda run_id: log.info("run logged to mlflow", run_id=run_id),
                )
                log.info(
                    "experiment logged to mlflow",
                    runs=len(logged.runs),
                    seconds=round(time.perf_counter() - started, 3),
                )
                return TrackingResult(**{k: v for k, v in logged.to_json().items() if k != "configs"})

            try:
                return await _in_thread(log_all)
            except (TrackingUnavailable, ApplicationError):
                raise
            except Exception as exc:  # the server failed or went away mid-way: the next attempt resumes
                raise self._unavailable(request.experiment_id, uri, f"{type(exc).__name__}: {exc}") from None

    @activity.defn(name=ACTIVITY.register_in_mlflow)
    async def register_in_mlflow(self, request: RegisterInput) -> RegisterResult:
        """Register the experiment's winner as a model version; move the alias only for a significant gain."""
        with telemetry.bind_run(experiment_id=request.experiment_id, attempt=activity.info().attempt):

            def register() -> RegisterResult:
                self._reachable(request.experiment_id, request.uri)
                winner, reason = choose_winner(self.runs_dir, request.experiment_id)
                if winner not in request.runs:
                    raise InvalidInputError(
                        f"experiment {request.experiment_id}: register: {winner} was not logged to MLflow"
                    )
                registration = register_winner(
                    self.runs_dir,
                    request.experiment_id,
                    uri=request.uri,
                    mlflow_run_id=request.runs[winner],
                    winner=winner,
                    reason=reason,
                    name=request.name,
                    alias=request.alias,
                    split=request.split,
                )
                record = mlflow_record(self.runs_dir, request.experiment_id) or {}
                atomic_write_json(
                    tracking_record_file(self.runs_dir, request.experiment_id),
                    {**record, "registration": registration.to_json()},
                )
                log.info("winner registered", **registration.to_json())
                return RegisterResult(**registration.to_json())

            try:
                return await _in_thread(register)
            except InvalidInputError as exc:
                raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
            except ApplicationError:
                raise
            except Exception as exc:
                raise self._unavailable(request.experiment_id, request.uri, f"{type(exc).__name__}: {exc}") from None

    def all(self) -> list[Callable[..., Any]]:
        """The activities to register on the eval worker."""
        return [self.log_to_mlflow, self.register_in_mlflow]

    def _uri(self, experiment_id: str, uri: str | None) -> str:
        try:
            return resolve_tracking_uri(uri, self.default_uri)
        except TrackingUnavailable as exc:
            raise ApplicationError(
                f"experiment {experiment_id}: {exc}", type=INVALID_INPUT, non_retryable=True
            ) from None

    def _reachable(self, experiment_id: str, uri: str) -> None:
        try:
            check_tracking_server(uri)
        except TrackingUnavailable as exc:
            raise self._unavailable(experiment_id, uri, str(exc)) from None

    def _unavailable(self, experiment_id: str, uri: str, cause: str) -> ApplicationError:
        """A retryable failure, also written where `status` and the run records look."""
        message = f"experiment {experiment_id}: MLflow logging to {uri} failed: {cause}"
        record = mlflow_record(self.runs_dir, experiment_id) or {}
        if record.get("state") != "logged":
            failures = int(record.get("failures", 0)) + 1
            atomic_write_json(
                tracking_record_file(self.runs_dir, experiment_id),
                {**record, "state": "unreachable", "uri": uri, "error": message, "failures": failures},
            )
        log.warning("mlflow unreachable", uri=uri, error=cause)
        return ApplicationError(message, type=TRANSIENT_FAILURE)
