from __future__ import annotations

import numpy as np
import pytest

from bert_eval.core.evaluation.task_metrics import compute_metrics
from bert_eval.spec import TaskType


def test_binary_classification_metrics() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])  # predicts 0, 1, 1, 0
    labels = np.array([0, 1, 0, 0])
    metrics = compute_metrics(logits, labels, task=TaskType.classification, num_labels=2)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx(2 / 3)  # binary F1 of the positive class: P=1/2, R=1
    assert metrics["mcc"] == pytest.approx(0.5773502691896258)


def test_multiclass_uses_macro_f1() -> None:
    logits = np.eye(3)[[0, 1, 2, 2]]
    metrics = compute_metrics(logits, np.array([0, 1, 2, 1]), task=TaskType.classification, num_labels=3)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_regression_metrics() -> None:
    predictions = np.array([[1.0], [2.0], [3.0], [4.0]])
    labels = np.array([1.0, 2.0, 3.0, 5.0])
    metrics = compute_metrics(predictions, labels, task=TaskType.regression, num_labels=1)
    assert metrics["spearman"] == pytest.approx(1.0)
    assert metrics["pearson"] == pytest.approx(0.9827076298239908)
    assert metrics["mse"] == pytest.approx(0.25)


def test_constant_regression_prediction_reports_zero_correlation_not_nan() -> None:
    metrics = compute_metrics(np.ones((3, 1)), np.array([1.0, 2.0, 3.0]), task=TaskType.regression, num_labels=1)
    assert metrics["pearson"] == 0.0 and metrics["spearman"] == 0.0
