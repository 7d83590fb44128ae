"""Per-example predictions of an evaluation: `runs/<run_id>/predictions-<split>.parquet`.

One row per row of the snapshot's evaluation table: its index (`row`), the gold `label`, the
`prediction` (class id, or the regression score) and, for classification, the class `probabilities`
(softmax of the logits, one entry per class in the schema's label order). The file's metadata records
the task, the class names and a digest of the evaluated rows' content, so two runs can be checked to
have been evaluated on the same rows even when their snapshots differ (another training seed).

Publication order: this file is written (temporary name, fsync, rename) before `eval-<split>.json`,
which records its sha256; a crash between the two leaves predictions without a result, never a result
without its predictions, and a result whose predictions were replaced is detected on reading.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.special import softmax

from bert_eval.core.data.snapshot import eval_table, read_split
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.records import EvalResult, SnapshotResult
from bert_eval.core.storage.fsutil import atomic_write_bytes
from bert_eval.core.storage.layout import RunLayout
from bert_eval.spec import TaskType

__all__ = [
    "Predictions",
    "encode_predictions",
    "load_predictions",
    "predictions_intact",
    "predictions_of",
    "rows_digest",
    "write_predictions",
]

ROW, LABEL, PREDICTION, PROBABILITIES = "row", "label", "prediction", "probabilities"
_METADATA_KEY = b"bert_eval.predictions"
_FORMAT = 1


@dataclass(frozen=True, eq=False)
class Predictions:
    """One evaluation's per-example outputs, in the evaluation table's row order."""

    run_id: str
    split: str
    snapshot_id: str
    rows_digest: str  # content digest of the evaluated rows (texts and gold labels)
    task: TaskType
    label_names: tuple[str, ...]  # class names by id; empty for regression
    rows: np.ndarray  # int64 row index into the snapshot's evaluation table
    labels: np.ndarray  # gold class ids (int64) or scores (float32)
    predicted: np.ndarray  # predicted class ids (int64) or scores (float32)
    probabilities: np.ndarray | None  # (rows, classes) float32; None for regression

    @property
    def num_labels(self) -> int:
        """The model's output width: the class count, or 1 for regression."""
        return 1 if self.task is TaskType.regression else len(self.label_names)

    def __len__(self) -> int:
        return len(self.rows)


def rows_digest(rows: datasets.Dataset) -> str:
    """Digest of a table's content (every column, in row order), independent of how it was stored."""
    digest = hashlib.sha256()
    table = rows.with_format("arrow")
    for name in sorted(rows.column_names):
        digest.update(f"\0{name}\0".encode())
        digest.update(json.dumps(table[name].to_pylist()).encode())
    return digest.hexdigest()


def write_predictions(
    layout: RunLayout, split: str, *, snapshot: SnapshotResult, logits: np.ndarray, labels: np.ndarray
) -> str:
    """Publish the predictions of an evaluation of `split` (logits and labels in table order); returns
    the file's sha256, which the evaluation result records."""
    data = encode_predictions(run_id=layout.run_id, split=split, snapshot=snapshot, logits=logits, labels=labels)
    atomic_write_bytes(layout.predictions_file(split), data)
    return hashlib.sha256(data).hexdigest()


def encode_predictions(
    *, run_id: str, split: str, snapshot: SnapshotResult, logits: np.ndarray, labels: np.ndarray
) -> bytes:
    """The predictions file's bytes (parquet) for an evaluation of `split` by run `run_id`; InvalidInputError
    unless there is one output per row of the snapshot's evaluation table."""
    schema = snapshot.dataset_schema
    table_rows = read_split(snapshot, eval_table(split), run_id=run_id)
    if len(table_rows) != len(labels):
        raise InvalidInputError(
            f"run {run_id}: {len(labels)} predictions for the {len(table_rows)} rows of split {split!r} "
            f"in snapshot {snapshot.snapshot_id}; evaluate the whole table"
        )
    columns: dict[str, Any] = {ROW: pa.array(np.arange(len(labels), dtype=np.int64))}
    if schema.task is TaskType.regression:
        columns[LABEL] = pa.array(np.asarray(labels, dtype=np.float32))
        columns[PREDICTION] = pa.array(np.asarray(logits, dtype=np.float32).reshape(-1))
    else:
        logits = np.asarray(logits, dtype=np.float32)
        columns[LABEL] = pa.array(np.asarray(labels, dtype=np.int64))
        columns[PREDICTION] = pa.array(np.argmax(logits, axis=-1).astype(np.int64))  # as compute_metrics
        probabilities = softmax(logits, axis=-1).astype(np.float32)
        columns[PROBABILITIES] = pa.FixedSizeListArray.from_arrays(
            pa.array(probabilities.reshape(-1)), schema.num_labels
        )
    metadata = {
        "format": _FORMAT,
        "run_id": run_id,
        "split": split,
        "snapshot_id": snapshot.snapshot_id,
        "rows_digest": rows_digest(table_rows),
        "task": schema.task.value,
        "label_names": list(schema.label_names),
    }
    table = pa.table(columns).replace_schema_metadata({_METADATA_KEY: json.dumps(metadata).encode()})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def predictions_intact(file: Path, result: EvalResult) -> bool:
    """Whether `file` holds the predictions `result` records (its sha256); False when it is missing or was
    replaced."""
    if result.predictions_sha256 is None:
        return False
    try:
        data = Path(file).read_bytes()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == result.predictions_sha256


def load_predictions(layout: RunLayout, split: str) -> Predictions:
    """The predictions of the run's evaluation of `split`, verified against the digest its result records.

    InvalidInputError (naming the run and what to do) when the run has no evaluation of that split,
    was evaluated before predictions were kept, or its predictions file is missing or was replaced."""
    run = f"run {layout.run_id}"
    again = f"evaluate {layout.run_id} on {split!r} again to rewrite both"
    eval_file = layout.eval_file(split)
    try:
        result = EvalResult.model_validate(json.loads(eval_file.read_text()))
    except FileNotFoundError:
        evaluated = sorted(p.name for p in layout.root.glob("eval-*.json")) if layout.root.is_dir() else []
        where = f"it has {', '.join(evaluated)}" if evaluated else f"no evaluation results under {layout.root}"
        raise InvalidInputError(
            f"{run} has no evaluation of split {split!r} ({where}); check the run id and --split"
        ) from None
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{run}: {eval_file} is unreadable ({exc}); {again}") from None
    if result.predictions_sha256 is None:
        raise InvalidInputError(f"{run} was evaluated on {split!r} before per-example predictions were kept; {again}")
    file = layout.predictions_file(split)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise InvalidInputError(f"{run}: {file} is missing although {eval_file.name} records it; {again}") from None
    if hashlib.sha256(data).hexdigest() != result.predictions_sha256:
        raise InvalidInputError(
            f"{run}: {file.name} does not match the digest {eval_file.name} records (it was replaced after the "
            f"evaluation, or a later evaluation stopped before writing its result); {again}"
        )
    return _decode(data)


def predictions_of(result: EvalResult) -> Predictions:
    """The predictions an evaluation result records (a run's evaluation or a cell), verified by their digest.

    InvalidInputError (naming the run and the split) when the result predates predictions, or the file is
    unreadable or replaced."""
    owner = f"run {result.run_id}: evaluation of {result.split!r}"
    if result.predictions_path is None or result.predictions_sha256 is None:
        raise InvalidInputError(f"{owner} was made before per-example predictions were kept; evaluate it again")
    try:
        data = Path(result.predictions_path).read_bytes()
    except OSError as exc:
        raise InvalidInputError(
            f"{owner}: its predictions {result.predictions_path} are unreadable ({exc}); evaluate it again"
        ) from None
    if hashlib.sha256(data).hexdigest() != result.predictions_sha256:
        raise InvalidInputError(
            f"{owner}: {result.predictions_path} does not match the digest its result records; evaluate it again"
        )
    return _decode(data)


def _decode(data: bytes) -> Predictions:
    table = pq.read_table(io.BytesIO(data))
    metadata = json.loads((table.schema.metadata or {})[_METADATA_KEY])
    task = TaskType(metadata["task"])
    probabilities = None
    if task is TaskType.classification:
        flat = table.column(PROBABILITIES).combine_chunks().flatten().to_numpy()
        probabilities = flat.reshape(len(table), len(metadata["label_names"]))
    return Predictions(
        run_id=metadata["run_id"],
        split=metadata["split"],
        snapshot_id=metadata["snapshot_id"],
        rows_digest=metadata["rows_digest"],
        task=task,
        label_names=tuple(metadata["label_names"]),
        rows=table.column(ROW).to_numpy(),
        labels=table.column(LABEL).to_numpy(),
        predicted=table.column(PREDICTION).to_numpy(),
        probabilities=probabilities,
    )
