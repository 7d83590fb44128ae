"""Task metrics as small pure functions (scikit-learn / scipy; nothing downloaded at run time)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error

from bert_eval.spec import TaskType

__all__ = ["classification_metrics", "compute_metrics", "metric_function", "metric_names", "regression_metrics"]


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of predicted class ids equal to the gold ones."""
    return float(accuracy_score(labels, predictions))


def f1(predictions: np.ndarray, labels: np.ndarray, *, num_labels: int) -> float:
    """F1 of the positive class (id 1) for two classes, else the macro average over classes; 0 where a
    class is never predicted."""
    average = "binary" if num_labels == 2 else "macro"
    return float(f1_score(labels, predictions, average=average, zero_division=0))


def mcc(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation coefficient of predicted and gold class ids."""
    return float(matthews_corrcoef(labels, predictions))


def _constant(predictions: np.ndarray, labels: np.ndarray) -> bool:
    # A constant prediction has no correlation: report 0 rather than NaN.
    return bool(np.allclose(predictions, predictions[0]) or np.allclose(labels, labels[0]))


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Pearson correlation of predicted and gold scores; 0 when either is constant."""
    return 0.0 if _constant(predictions, labels) else float(pearsonr(predictions, labels)[0])


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Spearman rank correlation of predicted and gold scores; 0 when either is constant."""
    return 0.0 if _constant(predictions, labels) else float(spearmanr(predictions, labels)[0])


def mse(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of predicted against gold scores."""
    return float(mean_squared_error(labels, predictions))


def classification_metrics(predictions: np.ndarray, labels: np.ndarray, *, num_labels: int) -> dict[str, float]:
    """Accuracy, F1 and MCC of predicted class ids against gold ones."""
    return {
        "accuracy": accuracy(predictions, labels),
        "f1": f1(predictions, labels, num_labels=num_labels),
        "mcc": mcc(predictions, labels),
    }


def regression_metrics(predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pearson, Spearman and MSE of predicted scores against gold ones."""
    return {
        "pearson": pearson(predictions, labels),
        "spearman": spearman(predictions, labels),
        "mse": mse(predictions, labels),
    }


def compute_metrics(logits: np.ndarray, labels: np.ndarray, *, task: TaskType, num_labels: int) -> dict[str, float]:
    """A task's metrics from a model's outputs: the arg-max class of each row's logits (classification) or
    the single output as the score (regression), against the gold labels; names as `metric_names`."""
    if task is TaskType.regression:
        return regression_metrics(np.asarray(logits).reshape(-1), np.asarray(labels, dtype=float))
    return classification_metrics(np.argmax(logits, axis=-1), np.asarray(labels), num_labels=num_labels)


def metric_names(task: TaskType) -> tuple[str, ...]:
    """The metrics `compute_metrics` reports for a task, the headline one first."""
    return ("pearson", "spearman", "mse") if task is TaskType.regression else ("accuracy", "f1", "mcc")


def metric_function(name: str, *, task: TaskType, num_labels: int) -> Callable[[np.ndarray, np.ndarray], float]:
    """One metric of `compute_metrics` as `(predicted labels or scores, gold labels) -> float`: the same
    definition, without computing the others (bootstrap resampling calls it thousands of times)."""
    if name not in metric_names(task):
        raise ValueError(f"{task.value} runs have no metric {name!r}; choose one of {', '.join(metric_names(task))}")
    if task is TaskType.regression:
        score = {"pearson": pearson, "spearman": spearman, "mse": mse}[name]
        # As compute_metrics: gold scores as floats.
        return lambda predictions, labels: score(np.asarray(predictions), np.asarray(labels, dtype=float))
    if name == "f1":
        return lambda predictions, labels: f1(predictions, labels, num_labels=num_labels)
    return {"accuracy": accuracy, "mcc": mcc}[name]
