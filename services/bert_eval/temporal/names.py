"""Names shared across process boundaries: workflows, activities, queries, search attributes, error
types, task queues, default timeouts. Workers, clients, the dev server and tests all read them here.

Changing a value here changes what running workflows and recorded histories refer to: see
docs/versioning.md before renaming anything.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import SearchAttributeKey

from bert_eval.core.errors import DeterministicFailure, InvalidInputError, TrainingInterrupted, TransientError
from bert_eval.settings import EVAL_TASK_QUEUE, TRAINING_TASK_QUEUE

__all__ = [
    "ACTIVITY",
    "DETERMINISTIC_FAILURE",
    "EVAL_TASK_QUEUE",
    "EXPERIMENT_ID",
    "INVALID_INPUT",
    "LEGACY_PROGRESS_SIGNAL",
    "PATCH",
    "QUERY",
    "RUN_ID",
    "SEARCH_ATTRIBUTE_NAMES",
    "TIMEOUTS",
    "TRAINING_INTERRUPTED",
    "TRAINING_TASK_QUEUE",
    "TRANSIENT_FAILURE",
    "WORKFLOW",
    "coordinator_workflow_id",
    "eval_workflow_id",
    "predict_workflow_id",
    "release_prefix",
    "rung_workflow_id",
    "training_workflow_id",
]


class WORKFLOW:
    """Workflow type names: the reference design's, so its clients start bert-eval's workflows by name."""

    coordinator = "CoordinatorWorkflow"
    training = "CheckpointedBertTrainingWorkflow"
    eval = "BertEvalWorkflow"
    predict = "PredictWorkflow"
    # What the children were registered as before (still served: see workflows.LEGACY_WORKFLOWS).
    legacy_training = "TrainingWorkflow"
    legacy_eval = "EvalWorkflow"


class PATCH:
    """`workflow.patched` ids (docs/versioning.md): each marks one change of a command sequence."""

    # Children started under the reference design's type names instead of the class names.
    reference_type_names = "reference-type-names"
    # The coordinator takes each run's snapshot before starting its training child (the child took it).
    snapshot_in_coordinator = "snapshot-in-coordinator"
    # The coordinator ends with the summarize_experiment activity (intervals per run and configuration).
    experiment_summary = "experiment-summary"
    # A search samples its next trial after a fixed lag (none for samplers that ignore results), not after
    # trial i - max_concurrent's rung-0 result: the ladder's `sampling_lag`.
    search_sampling_lag = "search-sampling-lag"
    # A search ranks equal objectives by the slice's loss before the trial index: the ladder's `loss_ties`.
    search_loss_ties = "search-loss-ties"
    # An experiment with `tracking:` ends by logging to MLflow (and registering its winner with `register:`).
    mlflow_tracking = "mlflow-tracking"


class QUERY:
    """Query names: the coordinator's per-run status, a training workflow's phase."""

    status = "status"
    progress = "progress"


# Kept only so histories recorded when training progress was signalled still replay (nothing sends it).
LEGACY_PROGRESS_SIGNAL = "report_progress"


class ACTIVITY:
    """Activity type names."""

    fine_tune = "fine_tune"
    snapshot_dataset = "snapshot_dataset"
    record_experiment = "record_experiment"
    find_existing_run = "find_existing_run"
    evaluate_model = "evaluate_model"
    predict = "predict"
    summarize_experiment = "summarize_experiment"
    describe_model = "describe_model"
    evaluate_cell = "evaluate_cell"
    suggest_trial = "suggest_trial"
    find_rung = "find_rung"
    evaluate_rung = "evaluate_rung"
    keep_last_checkpoint = "keep_last_checkpoint"
    record_search_progress = "record_search_progress"
    record_search = "record_search"
    log_to_mlflow = "log_to_mlflow"
    register_in_mlflow = "register_in_mlflow"


# Error types carried by ApplicationError.type (the core's error classes name them).
INVALID_INPUT = InvalidInputError.error_type
TRANSIENT_FAILURE = TransientError.error_type
DETERMINISTIC_FAILURE = DeterministicFailure.error_type
TRAINING_INTERRUPTED = TrainingInterrupted.error_type

# Search attributes. "RunId" is Temporal's own system attribute (the execution run id), hence the prefix.
RUN_ID = SearchAttributeKey.for_keyword("BertRunId")
EXPERIMENT_ID = SearchAttributeKey.for_keyword("BertExperimentId")
SEARCH_ATTRIBUTE_NAMES = (RUN_ID.name, EXPERIMENT_ID.name)


class TIMEOUTS:
    """Default activity timeouts and retry intervals."""

    snapshot_start_to_close = timedelta(hours=2)
    fine_tune_start_to_close = timedelta(days=7)
    evaluate_start_to_close = timedelta(hours=6)
    find_existing_start_to_close = timedelta(minutes=5)
    record_experiment_start_to_close = timedelta(minutes=2)
    predict_start_to_close = timedelta(hours=1)
    predict_heartbeat = timedelta(minutes=2)
    summarize_start_to_close = timedelta(minutes=30)
    suggest_start_to_close = timedelta(minutes=5)
    # MLflow logging retries with backoff while the tracking server is away, for at most this long; the
    # experiment's results stand without it (resubmitting the experiment logs them then).
    tracking_start_to_close = timedelta(minutes=20)
    tracking_schedule_to_close = timedelta(minutes=30)
    tracking_retry_maximum = timedelta(seconds=60)
    # Workers send heartbeats at least this often, so progress and cancellation reach training within seconds.
    heartbeat_throttle = timedelta(seconds=2)
    # Transient failures and lost workers are retried without limit, backing off up to this interval.
    retry_initial = timedelta(seconds=1)
    retry_maximum = timedelta(seconds=10)


# Workflow ids carry the release's task-queue prefix (`team-a-experiment-<id>`), so two releases on one
# Temporal namespace never share a workflow; without a prefix they are the plain ids.


def release_prefix(eval_task_queue: str) -> str:
    """The id prefix of the release whose eval queue this is (`team-a-bert-eval-task-queue` -> `team-a-`)."""
    return eval_task_queue.removesuffix(EVAL_TASK_QUEUE) if eval_task_queue.endswith(EVAL_TASK_QUEUE) else ""


def coordinator_workflow_id(experiment_id: str, *, prefix: str = "") -> str:
    """The coordinator's workflow id for an experiment: `<prefix>experiment-<experiment_id>`."""
    return f"{prefix}experiment-{experiment_id}"


def training_workflow_id(run_id: str, *, prefix: str = "") -> str:
    """A run's training workflow id: `<prefix>train-<run_id>`."""
    return f"{prefix}train-{run_id}"


def rung_workflow_id(run_id: str, rung: int, *, prefix: str = "") -> str:
    """A search trial's training up to one rung (each rung a workflow of its own)."""
    return f"{prefix}train-{run_id}-r{rung}"


def eval_workflow_id(run_id: str, split: str, *, prefix: str = "") -> str:
    """A run's evaluation workflow id on one split: `<prefix>eval-<run_id>-<split>`."""
    return f"{prefix}eval-{run_id}-{split}"


def predict_workflow_id(run_id: str, request_id: str, *, prefix: str = "") -> str:
    """A prediction request's workflow id: `<prefix>predict-<run_id>-<request_id>`."""
    return f"{prefix}predict-{run_id}-{request_id}"
