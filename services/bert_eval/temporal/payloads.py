"""What workflows take, return and answer: workflow inputs and results, and query state.

Plain pydantic, carried by Temporal's pydantic data converter. Workflow inputs outlive releases (a
workflow started by one release is replayed and finished by the next), so a field is never removed
from a payload that may be in flight without `_RETIRED` taking its place: retired fields are accepted
and dropped when an old payload is read.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator
from temporalio.exceptions import ApplicationError

from bert_eval.core.records import EvalResult, ExperimentSummary, ModelInfo, SnapshotResult, TrainingSummary
from bert_eval.core.search.asha import Ladder, SeenTrial
from bert_eval.core.search.outcome import SearchOutcome, SearchTrial
from bert_eval.experiment import describe_validation_error
from bert_eval.reference_compat import BertEvalRequest, CoordinatorWorkflowInput, is_reference_input
from bert_eval.spec import EvalRequest, Experiment, RunSpec, SearchSpec, normalize_id
from bert_eval.temporal.names import EVAL_TASK_QUEUE, INVALID_INPUT, TRAINING_TASK_QUEUE

__all__ = [
    "CoordinatorInput",
    "CoordinatorRequest",
    "CoordinatorStatus",
    "EvalRunInput",
    "EvalWorkflowRequest",
    "CellInput",
    "ExistingRun",
    "ExperimentResult",
    "MatrixCell",
    "ModelSourceInput",
    "Payload",
    "PredictInput",
    "RunPhase",
    "RunResult",
    "RunStatus",
    "RungInput",
    "SearchOutcome",
    "SearchProgress",
    "SearchState",
    "SearchTrial",
    "SuggestInput",
    "SummaryInput",
    "SummaryRun",
    "TrainingInput",
    "TrainingResult",
]

# Fields earlier releases wrote into workflow inputs that nothing reads any more.
_RETIRED = frozenset({"max_attempts", "max_training_attempts"})


class Payload(BaseModel):
    """Base of the types Temporal carries between workflows and activities: unknown fields are refused,
    `retired_fields` (written by earlier releases, read by nothing now) are accepted and dropped."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    retired_fields: ClassVar[frozenset[str]] = _RETIRED

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, value: Any) -> Any:
        if isinstance(value, dict) and cls.retired_fields.intersection(value):
            return {k: v for k, v in value.items() if k not in cls.retired_fields}
        return value


class SearchState(Payload):
    """Where a search stands: the data every trial trains on, and the ladder (trials, rungs, decisions)."""

    snapshot: SnapshotResult
    ladder: Ladder
    continued: int = 0  # runs of the coordinator before this one (continue-as-new)
    constant: float | None = None  # the objective a constant prediction scores on the search slice


class CoordinatorInput(Payload):
    """bert-eval's own input to `CoordinatorWorkflow` (the reference design's shape is accepted too)."""

    experiment: Experiment
    # Workflows cannot read the environment: the submitter passes the deployment's settings in.
    heartbeat_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    # Where training workflows and fine-tuning run (the coordinator and evaluation run on its own queue).
    training_task_queue: str = TRAINING_TASK_QUEUE
    # A search's state, carried into the next run of the coordinator when it continues as new.
    search_state: SearchState | None = None
    # A search continues as new (once its trials in flight have ended) past this many history events.
    search_history_limit: int = Field(default=8_000, ge=200, le=40_000)


class CoordinatorRequest(RootModel[CoordinatorInput | CoordinatorWorkflowInput]):
    """What `CoordinatorWorkflow` accepts: bert-eval's `{"experiment": ...}` or the reference design's
    `{"configs": [...]}`.

    Input that is neither fails the workflow at once (not its task, which Temporal would retry while the
    client waits) with one message naming the fields.
    """

    @field_validator("root", mode="before")
    @classmethod
    def _one_shape(cls, value: Any) -> Any:
        shape = CoordinatorWorkflowInput if is_reference_input(value) else CoordinatorInput
        return _parse(
            value,
            shape,
            workflow="CoordinatorWorkflow",
            expected='bert-eval\'s {"experiment": {...}} or the reference design\'s {"configs": [...]}',
        )


class TrainingInput(Payload):
    """Input of `CheckpointedBertTrainingWorkflow`: one run to fine-tune."""

    experiment_id: str
    run: RunSpec
    # The run's data snapshot. The coordinator takes it before starting the workflow; a workflow started
    # without one (directly, or by a coordinator of an earlier release) takes it on `eval_task_queue`.
    snapshot: SnapshotResult | None = None
    heartbeat_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    expected_snapshot_id: str | None = None  # a pinned snapshot (the reference input's dataset_snapshot)
    eval_task_queue: str = EVAL_TASK_QUEUE
    # A search trial's rung: pause at this step with a checkpoint there (None: train to the end).
    stop_at_step: int | None = None


class TrainingResult(Payload):
    """Result of `CheckpointedBertTrainingWorkflow`: the training summary and the snapshot it trained on;
    `reused` when the run's training had already finished."""

    summary: TrainingSummary
    snapshot: SnapshotResult
    reused: bool = False


class EvalRunInput(Payload):
    """Input of `BertEvalWorkflow` and of its evaluate activity: one trained model on one split."""

    experiment_id: str
    run_id: str
    model_dir: str
    snapshot: SnapshotResult
    request: EvalRequest
    # How fast a dead eval worker is noticed (the deployment's heartbeat timeout, passed in by the
    # coordinator).
    heartbeat_timeout_s: float = Field(default=120.0, gt=0, le=3600)


class ExistingRun(Payload):
    """What a previous submission left on disk for a run (summary without evaluation = eval still due)."""

    summary: TrainingSummary | None = None
    snapshot: SnapshotResult | None = None
    evaluation: EvalResult | None = None
    # Why the evaluation on disk is not reused (its kept predictions are missing or altered); None otherwise.
    evaluated_again: str | None = None


class RunPhase(str, Enum):
    """Where a run of an experiment stands, as the coordinator's status query reports it."""

    pending = "pending"
    training = "training"
    evaluating = "evaluating"
    completed = "completed"
    failed = "failed"


class RunStatus(BaseModel):
    """One run in the coordinator's status query: its phase, and its metrics or error once it ended."""

    run_id: str
    config: str | None = None
    phase: RunPhase = RunPhase.pending
    reused: bool = False
    error: str | None = None
    metrics: dict[str, float] = {}


class CoordinatorStatus(BaseModel):
    """The coordinator's status query: every run's status, and the summary and search once available."""

    experiment_id: str
    runs: list[RunStatus]
    summary: ExperimentSummary | None = None  # once every run has ended
    search: SearchOutcome | None = None  # a search's leaderboard
    tracking: str | None = None  # MLflow logging: where the results are, or why they are not there yet


class MatrixCell(BaseModel):
    """One evaluation of the matrix: a model on a dataset's split."""

    dataset: str
    evaluation: EvalResult


class RunResult(BaseModel):
    """One record per run, as the CLI's --json writes it."""

    run_id: str
    config: str | None = None
    status: Literal["completed", "failed"]
    reused: bool = False
    error: str | None = None
    training: TrainingSummary | None = None  # None for an eval-only run
    evaluation: EvalResult | None = None  # the run's first (primary) evaluation; `metrics` are its metrics
    cells: list[MatrixCell] = []  # the run's other evaluations (the evaluation matrix)
    metrics: dict[str, float] = {}
    # Why its kept evaluation was not reused and the run was evaluated again (kept predictions missing or altered).
    evaluated_again: str | None = None


class ExperimentResult(BaseModel):
    """Result of `CoordinatorWorkflow`: one record per run, the statistics summary and the search outcome."""

    experiment_id: str
    runs: list[RunResult]
    summary: ExperimentSummary | None = None
    search: SearchOutcome | None = None
    tracking: str | None = None  # MLflow logging: where the results are, or why they are not there yet


class SummaryRun(Payload):
    """One completed run as the `summarize_experiment` activity reads it: its primary evaluation and its
    matrix cells."""

    run_id: str
    config: str
    dataset: str
    evaluation: EvalResult  # the run's primary evaluation
    cells: tuple[MatrixCell, ...] = ()


class SummaryInput(Payload):
    """Input of the `summarize_experiment` activity: the experiment's completed runs."""

    experiment_id: str
    runs: tuple[SummaryRun, ...]


class ModelSourceInput(Payload):
    """Input of the `describe_model` activity: the model a run evaluates, as its spec names it."""

    run_id: str
    source: str  # a directory, a hub name, or `run:<RUN_ID>`
    # `source` is a reference-design `model_path` (`./bert_runs/<run_id>`, a run id, or a directory that
    # must lie inside the runs volume or the models mirror).
    reference_path: bool = False


class CellInput(Payload):
    """Input of the `evaluate_cell` activity: one cell of the evaluation matrix."""

    experiment_id: str
    run_id: str
    model: ModelInfo
    snapshot: SnapshotResult
    request: EvalRequest


class PredictInput(Payload):
    """Input of `PredictWorkflow` and its predict activity: texts to label with a run's final model."""

    run_id: str
    texts: tuple[str, ...] = Field(min_length=1, max_length=100_000)
    max_seq_length: int | None = Field(default=None, ge=8, le=8192)  # None: the run's training length
    use_gpu: bool = True
    batch_size: int = Field(default=64, ge=1, le=4096)

    @field_validator("run_id")
    @classmethod
    def _valid_run_id(cls, value: str) -> str:
        return normalize_id(value)


class EvalWorkflowRequest(RootModel[EvalRunInput | BertEvalRequest]):
    """What `BertEvalWorkflow` accepts: the coordinator's `EvalRunInput`, or the reference design's
    `BertEvalRequest` from a client that evaluates an existing model directly. Input that is neither fails the
    workflow at once, naming the fields."""

    @field_validator("root", mode="before")
    @classmethod
    def _one_shape(cls, value: Any) -> Any:
        shape = EvalRunInput if isinstance(value, dict) and "model_dir" in value else BertEvalRequest
        return _parse(
            value,
            shape,
            workflow="BertEvalWorkflow",
            expected="the reference design's BertEvalRequest or bert-eval's EvalRunInput",
        )


def _parse(value: Any, shape: type[BaseModel], *, workflow: str, expected: str) -> Any:
    """`value` as `shape`; invalid input raises an ApplicationError (not a ValueError: pydantic passes it
    through), so the workflow fails with one message naming the fields instead of failing its task."""
    if isinstance(value, BaseModel):
        return value
    try:
        return shape.model_validate(value)
    except ValidationError as exc:
        raise ApplicationError(
            f"invalid {workflow} input: {describe_validation_error(exc)} (expected {expected})",
            type=INVALID_INPUT,
            non_retryable=True,
        ) from None


class SuggestInput(Payload):
    """Input of the `suggest_trial` activity: the search, the trial to sample, the history it may see."""

    experiment_id: str
    search: SearchSpec
    index: int
    history: list[tuple[dict[str, float | int], float | None, bool]]  # searches started before `seen` existed
    seen: list[SeenTrial] | None = None  # `Ladder.sampler_view()`: what the sampler sees (then `history` is empty)


class RungInput(Payload):
    """Input of `find_rung` and `evaluate_rung`: a trial's rung (its step) and where its model is."""

    experiment_id: str
    run: RunSpec
    step: int
    snapshot: SnapshotResult
    model_dir: str | None = None  # evaluate_rung: the rung's checkpoint, or the final model at the last rung


class SearchProgress(Payload):
    """Input of `record_search_progress`: a search's trial counts by state and its best objective so far."""

    experiment_id: str
    metric: str
    trials: dict[str, int]  # state -> count
    best: float | None = None
