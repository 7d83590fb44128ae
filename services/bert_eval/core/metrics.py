"""Task metrics as small pure functions (scikit-learn / scipy; nothing downloaded at run time)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error

from bert_eval.spec import TaskType

__all__ = ["classification_metrics", "compute_metrics", "regression_metrics"]


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, *, num_labels: int) -> dict[str, float]:
    average = "binary" if num_labels == 2 else "macro"
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average=average, zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, predictions)),
    }


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    # A constant prediction has no correlation: report 0 rather than NaN.
    constant = np.allclose(predictions, predictions[0]) or np.allclose(labels, labels[0])
    return {
        "pearson": 0.0 if constant else float(pearsonr(predictions, labels)[0]),
        "spearman": 0.0 if constant else float(spearmanr(predictions, labels)[0]),
        "mse": float(mean_squared_error(labels, predictions)),
    }


def compute_metrics(logits: np.ndarray, labels: np.ndarray, *, task: TaskType, num_labels: int) -> dict[str, float]:
    if task is TaskType.regression:
        return regression_metrics(np.asarray(logits).reshape(-1), np.asarray(labels, dtype=float))
    return classification_metrics(np.argmax(logits, axis=-1), np.asarray(labels), num_labels=num_labels)
