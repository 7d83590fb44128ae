"""Batched inference-mode evaluation of a trained model on a snapshot split; writes `eval-<split>.json`
and, before it, the per-example `predictions-<split>.parquet` (core/evaluation/predictions.py).

The fast path (each part switchable in EvalRequest): rows sorted by length so each batch pads little,
each batch padded to its longest row (on CUDA rounded up to a multiple of 8), batches large on CUDA and
64 rows on CPU (`eval_batch_size`), bf16 autocast on CUDA. Logits are put back in the
split's order before the metrics, so the numbers do not depend on the batching.

`infer` is the one implementation of that loop; `evaluate` (a run's evaluation) and core/evaluation/cells.py
(an evaluation cell shared by every run asking for the same model and rows) publish its output.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from bert_eval import telemetry
from bert_eval.core.data.batching import dynamic_padding, padding_collator
from bert_eval.core.data.snapshot import eval_table
from bert_eval.core.data.tokenize import LENGTH, tokenized_split
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation.predictions import write_predictions
from bert_eval.core.evaluation.task_metrics import compute_metrics
from bert_eval.core.modeling import load_trained
from bert_eval.core.records import EvalResult, SnapshotResult
from bert_eval.core.storage.fsutil import atomic_write_json
from bert_eval.core.storage.layout import RunLayout
from bert_eval.spec import EvalRequest

__all__ = ["Inference", "eval_batch_size", "evaluate", "infer", "load_eval_result", "result_record"]

log = telemetry.get_logger(__name__)


# Rows per batch when the request leaves it open: large on CUDA to keep the device busy; 64 on CPU, where a
# GEMM is as efficient at 64 rows and larger batches' activations are mapped and unmapped by glibc on
# every use (docs/performance.md).
EVAL_BATCH = {"cuda": 256, "cpu": 64}


def eval_batch_size(request: EvalRequest, device: str) -> int:
    """The request's batch size, or the device's default."""
    if request.batch_size is not None:
        return request.batch_size
    return EVAL_BATCH["cuda" if device.startswith("cuda") else "cpu"]


@dataclass(frozen=True, eq=False)
class Inference:
    """A model's outputs on a snapshot's evaluation table, in the table's row order."""

    logits: np.ndarray
    labels: np.ndarray
    metrics: dict[str, float]
    duration_s: float


def evaluate(
    *,
    run_id: str,
    model_dir: str | Path,
    snapshot: SnapshotResult,
    request: EvalRequest,
    runs_dir: Path,
    device: str = "cpu",
    on_batch: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Evaluate a run's trained model on a snapshot split; write its predictions, then its result file.

    Same model and same snapshot give the same numbers, whatever the batching.

    Parameters
    ----------
    run_id : str
        The run; the files go to `RunLayout(runs_dir, run_id)` (`eval-<split>.json`,
        `predictions-<split>.parquet`).
    model_dir : str or Path
        The directory holding the trained model and its tokenizer (the run's `model/`).
    snapshot : SnapshotResult
        The snapshot holding the evaluation table of `request.split`.
    request : EvalRequest
        The split and the fast-path switches (batch size, length sorting, dynamic padding, bf16).
    runs_dir : Path
        The runs volume.
    device : str, default "cpu"
        Where to run the model.
    on_batch : callable, optional
        Called as ``on_batch(done, total)`` after each batch (heartbeats).

    Returns
    -------
    EvalResult
        The metrics, the example count, the duration and where the result and predictions were written.

    Raises
    ------
    InvalidInputError
        If there is no trained model at `model_dir`, the run directory is unsafe, or the snapshot lacks the
        split or no longer matches its manifest.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InvalidInputError(f"run {run_id}: no trained model at {model_dir}")
    layout = RunLayout(runs_dir, run_id)
    layout.ensure_safe()  # the result file must land inside the runs directory
    outputs = infer(
        run_id=run_id, model_dir=model_dir, snapshot=snapshot, request=request, device=device, on_batch=on_batch
    )
    # Predictions first: the result that records their digest is published only once they are in place.
    predictions_sha256 = write_predictions(
        layout, request.split, snapshot=snapshot, logits=outputs.logits, labels=outputs.labels
    )
    result = EvalResult(
        run_id=run_id,
        split=request.split,
        examples=len(outputs.labels),
        metrics=outputs.metrics,
        duration_s=outputs.duration_s,
        path=str(layout.eval_file(request.split)),
        predictions_path=str(layout.predictions_file(request.split)),
        predictions_sha256=predictions_sha256,
    )
    atomic_write_json(layout.eval_file(request.split), result_record(result))

    log.info("evaluation done", run_id=run_id, split=request.split, examples=result.examples, **outputs.metrics)
    return result


def infer(
    *,
    run_id: str,
    model_dir: str | Path,
    snapshot: SnapshotResult,
    request: EvalRequest,
    device: str = "cpu",
    on_batch: Callable[[int, int], None] | None = None,
    span_attributes: dict[str, str] | None = None,
    load: Callable[[], tuple[PreTrainedTokenizerBase, PreTrainedModel]] | None = None,
) -> Inference:
    """Run the model over the snapshot's evaluation table of `request.split` and compute the metrics;
    writes nothing.

    The model is the one in `model_dir`, loaded with its tokenizer; `load` gives both instead (a checkpoint
    has no tokenizer of its own)."""
    schema = snapshot.dataset_schema
    started = time.monotonic()
    attributes = {"run_id": run_id, "split": request.split, **(span_attributes or {})}
    with telemetry.tracer().start_as_current_span("evaluate", attributes=attributes) as span:
        if load is not None:
            tokenizer, model = load()
        else:
            tokenizer, model = load_trained(model_dir, schema, run_id=run_id, device=device)
        # The trained model's tokenizer records the training max_seq_length: truncate the same way.
        max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
        # Digest-verified rows (also on a tokenization-cache hit).
        split = tokenized_split(snapshot, eval_table(request.split), tokenizer, max_length=max_length, run_id=run_id)
        # Stable sort: equal lengths keep their order, so the batches (and the numbers) are reproducible.
        # The lengths as one Arrow column; `split[LENGTH]` would format row by row.
        lengths = split.with_format("arrow")[LENGTH].to_numpy()
        order = np.argsort(lengths, kind="stable") if request.sort_by_length else np.arange(len(split))
        split = split.remove_columns(LENGTH).select(order)
        padding = dynamic_padding(device, enabled=request.dynamic_padding)
        collator = padding_collator(tokenizer, padding=padding, max_length=max_length)
        loader = DataLoader(
            split,
            batch_size=eval_batch_size(request, device),
            shuffle=False,
            collate_fn=collator,
            pin_memory=device == "cuda",
        )
        bf16 = request.bf16 and device == "cuda" and torch.cuda.is_bf16_supported()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        all_logits, all_labels = [], []
        with torch.inference_mode(), autocast:
            for index, batch in enumerate(loader):
                all_labels.append(batch.pop("labels"))
                batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
                all_logits.append(model(**batch).logits.float())  # stays on the device: no per-batch sync
                if on_batch is not None:
                    on_batch(index + 1, len(loader))
        sorted_logits = torch.cat(all_logits).cpu().numpy()
        sorted_labels = torch.cat(all_labels).numpy()
        logits, labels = np.empty_like(sorted_logits), np.empty_like(sorted_labels)
        logits[order], labels[order] = sorted_logits, sorted_labels
        metrics = compute_metrics(logits, labels, task=schema.task, num_labels=schema.num_labels)
        span.set_attributes({f"metric.{k}": v for k, v in metrics.items()})
    return Inference(logits=logits, labels=labels, metrics=metrics, duration_s=round(time.monotonic() - started, 3))


def result_record(result: EvalResult) -> dict[str, object]:
    """What a result file holds: the result, less `reused` and `evaluated_again` (properties of one call, not of
    the evaluation)."""
    return result.model_dump(mode="json", exclude={"reused", "evaluated_again"})


def load_eval_result(layout: RunLayout, split: str) -> EvalResult | None:
    """The run's recorded evaluation on `split`, or None when it has not been evaluated there."""
    file = layout.eval_file(split)
    if not file.is_file():
        return None
    return EvalResult.model_validate(json.loads(file.read_text()))
