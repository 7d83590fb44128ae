"""Evaluation cells: each (model, snapshot, split) is evaluated once and shared.

A cell is addressed by content: the model's digest (core/modeling.py: model_digest) and the snapshot id
(which hashes the rows, and for an eval-only snapshot the model's label set), so any run that evaluates
the same model on the same rows gets the cell's result instead of a recomputation. A cell is written in a
staging directory (predictions, then the result recording their sha256) and renamed into place, so it is
absent or complete; one whose predictions no longer match its result is kept aside and evaluated again.

A cell holds the first evaluation of it: the batching options do not change its numbers, but bf16
autocast (CUDA only) does in the last digits, so a cell first computed on a GPU keeps the GPU's numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bert_eval import telemetry
from bert_eval.core.data.snapshot import eval_table
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation.batched import infer, result_record
from bert_eval.core.evaluation.predictions import encode_predictions, predictions_intact
from bert_eval.core.records import EvalResult, ModelInfo, SnapshotResult
from bert_eval.core.storage.fsutil import atomic_write_bytes, atomic_write_json, discard_dir, publish_dir
from bert_eval.core.storage.layout import CellLayout
from bert_eval.spec import EvalRequest

__all__ = ["evaluate_cell", "load_cell"]

log = telemetry.get_logger(__name__)


def evaluate_cell(
    *,
    run_id: str,
    model: ModelInfo,
    snapshot: SnapshotResult,
    request: EvalRequest,
    runs_dir: Path,
    device: str = "cpu",
    on_batch: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """The evaluation of `model` on the snapshot's `request.split` table, for run `run_id`: the existing
    cell's result (`reused`) when it is complete, else evaluated now and published as the cell.

    Parameters
    ----------
    run_id : str
        The run asking; named in the returned result, in messages and, if it computes the cell, in the
        cell's own file.
    model : ModelInfo
        The model (its path, content digest, task and class names), as `describe_model` gives it.
    snapshot : SnapshotResult
        A snapshot labelled with the model's classes (`SnapshotInput.for_model`, or the run's own).
    request : EvalRequest
        The split and the fast-path switches; they do not change the numbers (bf16 on CUDA in the last
        digits only).
    runs_dir : Path
        The runs volume; the cell lives in `<runs_dir>/evals/` (`CellLayout`).
    device : str, default "cpu"
        Where to run the model if the cell must be computed.
    on_batch : callable, optional
        Called as ``on_batch(done, total)`` after each batch (heartbeats).

    Returns
    -------
    EvalResult
        The cell's metrics and files; `reused` is True when the cell already existed (here or published
        concurrently by another worker).

    Raises
    ------
    InvalidInputError
        If the snapshot's task or classes differ from the model's, the cell's directory is unsafe, or the
        cell was found incomplete while being published (evaluate again).
    """
    _check_labels(run_id, model, snapshot)
    cell = CellLayout(Path(runs_dir), model.digest, snapshot.snapshot_id, request.split)
    if (problem := cell.escape()) is not None:
        raise InvalidInputError(f"run {run_id}: {problem}")
    existing = _verified_cell(cell, snapshot)
    set_aside = existing if isinstance(existing, str) else None
    if isinstance(existing, EvalResult):
        log.info("evaluation cell reused", run_id=run_id, cell=cell.name, computed_by=existing.run_id)
        _record_run(cell, run_id, request)
        return existing.model_copy(update={"run_id": run_id, "reused": True})

    outputs = infer(
        run_id=run_id,
        model_dir=model.path,
        snapshot=snapshot,
        request=request,
        device=device,
        on_batch=on_batch,
        span_attributes={"model_digest": model.digest, "snapshot_id": snapshot.snapshot_id},
    )
    predictions = encode_predictions(
        run_id=run_id, split=request.split, snapshot=snapshot, logits=outputs.logits, labels=outputs.labels
    )
    result = EvalResult(
        run_id=run_id,
        split=request.split,
        examples=len(outputs.labels),
        metrics=outputs.metrics,
        duration_s=outputs.duration_s,
        path=str(cell.eval_file),
        predictions_path=str(cell.predictions_file),
        predictions_sha256=hashlib.sha256(predictions).hexdigest(),
    )
    if not _publish(cell, predictions, result):
        published = load_cell(cell, snapshot)
        if published is not None:  # another worker published the same cell first: theirs is as good
            log.info("evaluation cell published concurrently; using the existing one", run_id=run_id, cell=cell.name)
            _record_run(cell, run_id, request)
            return published.model_copy(update={"run_id": run_id, "reused": True})
        raise InvalidInputError(
            f"run {run_id}: evaluation cell {cell.root} appeared incomplete while being published; evaluate again"
        )
    _record_run(cell, run_id, request)
    log.info("evaluation cell done", run_id=run_id, cell=cell.name, examples=result.examples, **outputs.metrics)
    return result.model_copy(update={"evaluated_again": set_aside}) if set_aside is not None else result


def _record_run(cell: CellLayout, run_id: str, request: EvalRequest) -> None:
    """Write `runs/<run_id>.json` into the published cell: run `run_id` was evaluated as this cell, on its own
    dataset or on `request.dataset` (an evaluation-matrix entry). The same run and cell always write the same
    file, so writing it again changes nothing."""
    path = cell.run_file(run_id)
    if path.parent.is_symlink():
        raise InvalidInputError(f"run {run_id}: {path.parent} is a symbolic link; refusing to write through it")
    path.parent.mkdir(exist_ok=True)
    dataset = request.dataset.label if request.dataset is not None else None
    atomic_write_json(path, {"run_id": run_id, "split": cell.split, "cell": cell.name, "dataset": dataset})


def load_cell(cell: CellLayout, snapshot: SnapshotResult) -> EvalResult | None:
    """The cell's result when the cell is complete: its result readable, its predictions the ones the result
    records, and as many rows as the snapshot's table. None when there is no cell; an incomplete or damaged
    one is moved aside (kept for inspection, never deleted) and None returned, so it is evaluated again."""
    found = _verified_cell(cell, snapshot)
    return found if isinstance(found, EvalResult) else None


def _verified_cell(cell: CellLayout, snapshot: SnapshotResult) -> EvalResult | str | None:
    """`load_cell`, saying why a damaged cell was moved aside (one line naming the cell and where it went)."""
    if not cell.root.exists():
        return None
    problem = None
    try:
        result = EvalResult.model_validate(json.loads(cell.eval_file.read_text()))
    except (OSError, ValueError) as exc:
        problem = f"its result {cell.eval_file} is unreadable ({exc})"
    else:
        if not predictions_intact(cell.predictions_file, result):
            problem = f"{cell.predictions_file.name} is missing or does not match the digest its result records"
        elif result.examples != snapshot.splits.get(eval_table(cell.split)):
            expected = snapshot.splits.get(eval_table(cell.split))
            problem = f"it holds {result.examples} rows, the snapshot's table {expected}"
    if problem is not None:
        aside = cell.root.parent / f".corrupt-{cell.name}-{int(time.time())}-{uuid.uuid4().hex[:6]}"
        log.warning(
            "evaluation cell failed verification; moving it aside and evaluating again",
            cell=cell.name,
            problem=problem,
            aside=str(aside),
        )
        try:
            os.replace(cell.root, aside)
        except FileNotFoundError:
            pass  # another worker moved it aside first
        return f"its evaluation cell {cell.root} failed verification ({problem}; kept aside as {aside.name})"
    # Paths as seen from this worker (the volume may be mounted elsewhere than where the cell was written).
    return result.model_copy(update={"path": str(cell.eval_file), "predictions_path": str(cell.predictions_file)})


def _publish(cell: CellLayout, predictions: bytes, result: EvalResult) -> bool:
    """Write the cell under a temporary name and rename it into place; False when one was there first."""
    cell.ensure_safe()
    staging = cell.root.parent / f".tmp-{cell.name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        # Predictions first, then the result recording their digest (as a run's evaluation does).
        atomic_write_bytes(staging / cell.predictions_file.name, predictions)
        atomic_write_json(staging / cell.eval_file.name, result_record(result))
    except BaseException:
        discard_dir(staging)  # a full volume leaves no half-written cell behind
        raise
    return publish_dir(staging, cell.root)


def _check_labels(run_id: str, model: ModelInfo, snapshot: SnapshotResult) -> None:
    # The cell is keyed by the model and the rows: the snapshot's label ids must index this model's classes.
    schema = snapshot.dataset_schema
    if schema.task is not model.task or schema.label_names != model.label_names:
        what = f"{model.task.value}" + (f" with classes {list(model.label_names)}" if model.label_names else "")
        data = f"{schema.task.value}" + (f" with classes {list(schema.label_names)}" if schema.label_names else "")
        raise InvalidInputError(
            f"run {run_id}: the model at {model.path} is {what} but snapshot {snapshot.snapshot_id} holds {data}; "
            "snapshot the evaluation data with the model's labels (SnapshotInput.for_model)"
        )
