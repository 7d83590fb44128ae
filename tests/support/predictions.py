"""Simulated per-example predictions for the statistics tests: no model, known truth."""

from __future__ import annotations

import numpy as np

from bert_eval.core.evaluation.predictions import Predictions
from bert_eval.spec import TaskType


def classified(run_id: str, labels: np.ndarray, predicted: np.ndarray, *, digest: str = "rows-1") -> Predictions:
    """A binary classification run's predictions on `labels`' rows (rows with the same `digest` are comparable)."""
    return _predictions(run_id, labels, predicted, task=TaskType.classification, label_names=("0", "1"), digest=digest)


def scored(run_id: str, labels: np.ndarray, predicted: np.ndarray, *, digest: str = "rows-1") -> Predictions:
    """A regression run's scores on `labels`' rows."""
    return _predictions(run_id, labels, predicted, task=TaskType.regression, label_names=(), digest=digest)


def _predictions(
    run_id: str, labels: np.ndarray, predicted: np.ndarray, *, task: TaskType, label_names: tuple[str, ...], digest: str
) -> Predictions:
    return Predictions(
        run_id=run_id,
        split="validation",
        snapshot_id="snap",
        rows_digest=digest,
        task=task,
        label_names=label_names,
        rows=np.arange(len(labels)),
        labels=labels,
        predicted=predicted,
        probabilities=None,
    )
