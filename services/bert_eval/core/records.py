"""What the ML core produces: dataset schemas, snapshots, training progress and summaries, evaluation
and prediction results.

Plain pydantic (no torch, no I/O), so the Temporal layer carries them as activity results and workflows
import them through the sandbox.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from bert_eval.spec import TaskType

__all__ = [
    "CheckpointRef",
    "ConfigStats",
    "DatasetSchema",
    "EvalResult",
    "ExperimentSummary",
    "ModelInfo",
    "PredictResult",
    "RunInterval",
    "SnapshotResult",
    "TrainingProgress",
    "TrainingSummary",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSchema(_Strict):
    """How a dataset is read, inferred (run_glue rules) or given."""

    text_columns: tuple[str, ...]
    label_column: str
    task: TaskType
    # Sorted label values as strings, or a ClassLabel's names (classification only).
    label_names: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        """The model's output width: the class count, or 1 for regression."""
        return 1 if self.task is TaskType.regression else len(self.label_names)


class SnapshotResult(_Strict):
    """A verified snapshot: its content id, directory, schema and row count per table; `reused` when it
    existed before this call."""

    snapshot_id: str
    path: str
    dataset_schema: DatasetSchema
    splits: dict[str, int]
    reused: bool = False


class ModelInfo(_Strict):
    """A model as evaluation sees it (core/modeling.py: describe_model): where it is, what it holds, what it
    predicts."""

    path: str  # resolved local directory holding config.json and the weights
    digest: str  # 16 hex digits of sha256 over the directory's files (relative names and contents)
    task: TaskType
    # Classification: config.id2label in class-id order; empty for regression.
    label_names: tuple[str, ...] = ()
    max_position_embeddings: int | None = None
    run_id: str | None = None  # set when the model is a run's final model

    @property
    def num_labels(self) -> int:
        """The model's output width: the class count, or 1 for regression."""
        return 1 if self.task is TaskType.regression else len(self.label_names)


class CheckpointRef(_Strict):
    """A published checkpoint as progress reports name it: its step and directory."""

    step: int
    path: str


class TrainingProgress(BaseModel):
    """What a running fine-tune reports (heartbeats, progress query)."""

    run_id: str
    phase: Literal["pending", "snapshot", "loading", "training", "saving", "completed", "paused", "failed"] = "pending"
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    loss: float | None = None
    learning_rate: float | None = None
    last_checkpoint: CheckpointRef | None = None
    attempt: int = 1
    resumed_from_step: int | None = None
    heartbeat_time: float | None = None  # unix seconds, set when heartbeating


class TrainingSummary(_Strict):
    """A finished (or paused) training: steps, epochs, final loss, checkpoints and resumes, wall time, and
    where its model is."""

    run_id: str
    model: str
    final_loss: float | None
    steps: int
    epochs: float
    checkpoints_saved: int
    resumes: int
    resumed_from_steps: tuple[int, ...] = ()
    wall_time_s: float  # first attempt's start to completion, crashes and recovery included
    train_samples: int
    dataset_schema: DatasetSchema
    model_dir: str
    snapshot_id: str
    # Set when the training paused at a search rung (FineTuneRequest.stop_at_step): the checkpoint it paused
    # at, which `model_dir` names too (there is no final model yet).
    rung_checkpoint: str | None = None
    # Seconds this call spent (loading, training, checkpoints; not the final model's write); 0 when it
    # found the work already done.
    call_seconds: float | None = None


class EvalResult(_Strict):
    """An evaluation of a model on a split: its metrics, example count, duration and the files recording it."""

    run_id: str
    split: str
    examples: int
    metrics: dict[str, float]
    duration_s: float
    path: str
    # The per-example predictions (core/evaluation/predictions.py), written before this record; absent in
    # older results.
    predictions_path: str | None = None
    predictions_sha256: str | None = None
    # True when an existing evaluation of the same model on the same rows was returned
    # (core/evaluation/cells.py).
    reused: bool = False
    # Why the existing evaluation was not returned and this one was computed instead (its predictions missing
    # or altered); like `reused`, a property of one call, not written to the result file.
    evaluated_again: str | None = None


class PredictResult(BaseModel):
    """A run's model applied to new texts: one predicted label (or score) per text, in the texts' order."""

    run_id: str
    texts: list[str]
    predicted_labels: list[str]  # the dataset's own label names (regression: the predicted value as text)
    predicted_label_ids: list[int] = []  # classification: index into the run's sorted label set
    confidences: list[float] = []  # classification: softmax probability of the predicted label
    scores: list[float] | None = None  # regression: the predicted values


class RunInterval(BaseModel):
    """A run's metric with its 95% bootstrap interval over the evaluation examples."""

    run_id: str
    config: str
    metric: str
    value: float
    low: float | None = None
    high: float | None = None
    dataset: str | None = None
    split: str | None = None


class ConfigStats(BaseModel):
    """One configuration's metric over its seeds, and where it stands against the best configuration."""

    config: str
    metric: str
    runs: list[str]
    n: int
    mean: float
    std: float | None = None
    min: float
    max: float
    low: float | None = None  # 95% t-interval of the mean over seeds, on this evaluation set (None with one seed)
    high: float | None = None
    # 95% interval of the expected metric over seeds and evaluation sets (seeds, then examples; None with one
    # seed or without kept predictions): core/statistics/configs.py
    population_low: float | None = None
    population_high: float | None = None
    mark: str | None = None  # best | not significantly worse | significantly worse | untested
    # Welch's two-sided t-test against `against`, Holm-adjusted over every pair of configurations
    p_value: float | None = None
    against: str | None = None
    flag: str | None = None  # a result that decides nothing (every run predicts one class), with what to change


class ExperimentSummary(BaseModel):
    """Statistics over an experiment's completed runs (`summarize_experiment` activity)."""

    split: str
    configs: list[ConfigStats] = []
    runs: list[RunInterval] = []  # each run's primary evaluation
    matrix: list[RunInterval] = []  # every evaluation of every run: models x evaluation sets
    notes: list[str] = []
    # Results that decide nothing, each with what to change: a run that predicts one class, a table whose
    # configurations are all within seed noise of each other, a ranking no test can support.
    flags: list[str] = []
