"""A search trial's rung results: the objective measured on the search slice at a rung's checkpoint.

`<runs_dir>/runs/<run_id>/rungs/step-<N>.json` records what a rung measured, for the run's fingerprint and
snapshot: the metrics, the slice's loss (log-loss, or squared error for regression: the ladder breaks ties on
it), how many classes the model predicted, and what the best constant prediction scores on the same rows (a
search whose winner does no better has found nothing). `step-<N>.npz` keeps the per-row outputs and labels.
A resubmitted search reads the record back (`load_rung`) instead of training the rung again; the search's
decisions need the numbers only, not the checkpoint, so a stopped trial keeps just its last rung's
checkpoint (`keep_last_checkpoint`).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.special import log_softmax
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from bert_eval import telemetry
from bert_eval.core.data.snapshot import SEARCH_TABLE
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation.batched import infer
from bert_eval.core.evaluation.task_metrics import classification_metrics, regression_metrics
from bert_eval.core.modeling import resolve_model
from bert_eval.core.records import DatasetSchema, SnapshotResult, TaskType
from bert_eval.core.storage.checkpoints import CheckpointStore
from bert_eval.core.storage.fsutil import atomic_write_bytes, atomic_write_json
from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.storage.rundir import run_dir_conflict
from bert_eval.spec import EvalRequest, RunSpec

__all__ = [
    "RungResult",
    "constant_scores",
    "evaluate_rung",
    "keep_last_checkpoint",
    "load_rung",
    "rung_file",
    "slice_loss",
]

log = telemetry.get_logger(__name__)


class RungResult(BaseModel):
    """A trial's objective at one rung, measured on the search slice (`rungs/step-<N>.json`), with what the
    flags read: the slice's loss, the classes predicted and what a constant prediction scores."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    step: int
    metrics: dict[str, float]
    examples: int
    snapshot_id: str
    fingerprint: str
    seconds: float
    reused: bool = False
    loss: float | None = None  # mean log-loss on the slice (regression: mean squared error); lower is better
    predicted_classes: int | None = None  # distinct classes predicted on the slice (regression: None)
    constant: dict[str, float] = {}  # per metric, the best score a constant prediction gets on the slice


def rung_file(layout: RunLayout, step: int) -> Path:
    """Where a run's rung result at `step` is written."""
    return layout.root / "rungs" / f"step-{step}.json"


def load_rung(run: RunSpec, step: int, *, snapshot: SnapshotResult, runs_dir: Path) -> RungResult | None:
    """The rung's recorded result, if it was measured for this spec and these rows."""
    layout = RunLayout(runs_dir, run.id)
    if (conflict := run_dir_conflict(layout, run)) is not None:
        raise InvalidInputError(conflict)
    file = rung_file(layout, step)
    if not file.is_file():
        return None
    try:
        result = RungResult.model_validate(json.loads(file.read_text()))
    except ValueError:
        log.warning("unreadable rung result; measuring it again", run_id=run.id, path=str(file))
        return None
    if result.fingerprint != run.fingerprint() or result.snapshot_id != snapshot.snapshot_id:
        return None
    return result.model_copy(update={"reused": True})


def evaluate_rung(
    run: RunSpec, step: int, *, model_dir: str | Path, snapshot: SnapshotResult, runs_dir: Path, device: str = "cpu"
) -> RungResult:
    """Measure the model at `model_dir` (the rung's checkpoint, or the final model at the last rung) on the
    snapshot's search slice, and record the result."""
    model_dir = Path(model_dir)
    layout = RunLayout(runs_dir, run.id)
    layout.ensure_safe()
    outputs = infer(
        run_id=run.id,
        model_dir=model_dir,
        snapshot=snapshot,
        request=EvalRequest(split=SEARCH_TABLE, use_gpu=run.primary_eval.use_gpu),
        device=device,
        span_attributes={"step": str(step)},
        load=lambda: _load_checkpoint(model_dir, run, snapshot.dataset_schema, device),
    )
    schema = snapshot.dataset_schema
    classification = schema.task is TaskType.classification
    result = RungResult(
        run_id=run.id,
        step=step,
        metrics=outputs.metrics,
        examples=len(outputs.labels),
        snapshot_id=snapshot.snapshot_id,
        fingerprint=run.fingerprint(),
        seconds=outputs.duration_s,
        loss=slice_loss(outputs.logits, outputs.labels, task=schema.task),
        predicted_classes=len(np.unique(np.argmax(outputs.logits, axis=-1))) if classification else None,
        constant=constant_scores(outputs.labels, task=schema.task, num_labels=schema.num_labels),
    )
    file = rung_file(layout, step)
    file.parent.mkdir(parents=True, exist_ok=True)
    rows = io.BytesIO()
    np.savez(rows, logits=outputs.logits, labels=outputs.labels)
    atomic_write_bytes(file.with_suffix(".npz"), rows.getvalue())
    atomic_write_json(file, result.model_dump(mode="json", exclude={"reused"}))
    log.info("rung measured", run_id=run.id, step=step, **outputs.metrics)
    return result


def slice_loss(logits: np.ndarray, labels: np.ndarray, *, task: TaskType) -> float:
    """The mean log-loss of `logits` (rows x classes) against integer `labels`; for regression, the mean
    squared error of the scores."""
    if task is TaskType.regression:
        return float(np.mean((np.asarray(logits, dtype=float).reshape(-1) - np.asarray(labels, dtype=float)) ** 2))
    log_p = log_softmax(np.asarray(logits, dtype=float), axis=-1)
    return float(-np.mean(log_p[np.arange(len(labels)), np.asarray(labels, dtype=int)]))


def constant_scores(labels: np.ndarray, *, task: TaskType, num_labels: int) -> dict[str, float]:
    """Per metric, the best a model that ignores its input scores on these labels: one class for every row
    (the best class for each metric), or for regression the labels' mean."""
    labels = np.asarray(labels)
    if task is TaskType.regression:
        return regression_metrics(np.full(len(labels), float(np.mean(labels))), labels.astype(float))
    per_class = [
        classification_metrics(np.full(len(labels), c), labels, num_labels=num_labels) for c in range(num_labels)
    ]
    return {name: max(scores[name] for scores in per_class) for name in per_class[0]}


def _load_checkpoint(
    model_dir: Path, run: RunSpec, schema: DatasetSchema, device: str
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The weights at `model_dir` with the run's own tokenizer, truncating as its training did."""
    if not (model_dir / "config.json").is_file():
        raise InvalidInputError(f"run {run.id}: no checkpoint or model at {model_dir}")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(run.model))
    tokenizer.model_max_length = run.train.max_seq_length
    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).to(device).eval()
    if model.config.num_labels != schema.num_labels:
        raise InvalidInputError(
            f"run {run.id}: the model at {model_dir} has {model.config.num_labels} outputs, "
            f"the data {schema.num_labels}"
        )
    return tokenizer, model


def keep_last_checkpoint(run_id: str, *, runs_dir: Path) -> list[Path]:
    """Prune a stopped trial's checkpoints to its newest (the one at its last rung); returns what was removed."""
    layout = RunLayout(runs_dir, run_id)
    layout.ensure_safe()
    return CheckpointStore(layout.checkpoints, keep=1).prune()
