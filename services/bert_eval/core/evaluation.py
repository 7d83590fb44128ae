"""Batched, no-grad evaluation of a trained model on a snapshot split; writes `eval-<split>.json`."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from bert_eval import telemetry
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.fsutil import atomic_write_json
from bert_eval.core.layout import RunLayout
from bert_eval.core.metrics import compute_metrics
from bert_eval.core.snapshot import eval_table, read_split
from bert_eval.core.tokenize import tokenize_split
from bert_eval.types import EvalRequest, EvalResult, SnapshotResult

__all__ = ["evaluate", "load_eval_result"]

log = telemetry.get_logger(__name__)


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
    """Evaluate and write the result file. Same model + same snapshot ⇒ same numbers."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InvalidInputError(f"run {run_id}: no trained model at {model_dir}")
    layout = RunLayout(runs_dir, run_id)
    layout.ensure_safe()  # the result file must land inside the runs directory
    schema = snapshot.dataset_schema
    started = time.monotonic()
    with telemetry.tracer().start_as_current_span(
        "evaluate", attributes={"run_id": run_id, "split": request.split}
    ) as span:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).to(device).eval()
        if model.config.num_labels != schema.num_labels:
            raise InvalidInputError(
                f"run {run_id}: model has {model.config.num_labels} labels but the data has {schema.num_labels}"
            )
        # The trained model's tokenizer records the training max_seq_length: truncate the same way.
        max_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
        rows = read_split(snapshot, eval_table(request.split), run_id=run_id)  # digest-verified
        split = tokenize_split(rows, tokenizer, max_length=max_length)
        loader = DataLoader(split, batch_size=request.batch_size, shuffle=False, collate_fn=DataCollatorWithPadding(tokenizer))
        all_logits, all_labels = [], []
        with torch.inference_mode():
            for index, batch in enumerate(loader):
                labels = batch.pop("labels")
                batch = {key: value.to(device) for key, value in batch.items()}
                all_logits.append(model(**batch).logits.float().cpu().numpy())
                all_labels.append(labels.numpy())
                if on_batch is not None:
                    on_batch(index + 1, len(loader))
        logits, labels = np.concatenate(all_logits), np.concatenate(all_labels)
        metrics = compute_metrics(logits, labels, task=schema.task, num_labels=schema.num_labels)
        span.set_attributes({f"metric.{k}": v for k, v in metrics.items()})

    duration = time.monotonic() - started
    result = EvalResult(
        run_id=run_id,
        split=request.split,
        examples=len(labels),
        metrics=metrics,
        duration_s=round(duration, 3),
        path=str(layout.eval_file(request.split)),
    )
    atomic_write_json(layout.eval_file(request.split), result.model_dump(mode="json"))

    labels_ = {"run_id": run_id, "split": request.split}
    telemetry.EVAL.examples.labels(**labels_).set(len(labels))
    telemetry.EVAL.examples_per_second.labels(**labels_).set(len(labels) / max(duration, 1e-9))
    telemetry.EVAL.duration.labels(**labels_).observe(duration)
    for name, value in metrics.items():
        telemetry.EVAL.metric.labels(metric=name, **labels_).set(value)
    log.info("evaluation done", run_id=run_id, split=request.split, examples=len(labels), **metrics)
    return result


def load_eval_result(layout: RunLayout, split: str) -> EvalResult | None:
    file = layout.eval_file(split)
    if not file.is_file():
        return None
    return EvalResult.model_validate(json.loads(file.read_text()))
