"""Evaluation: batched inference-mode scoring of a model on a snapshot split, per-example predictions kept
beside the metrics, evaluation cells shared by every run that evaluates the same model on the same rows,
the task metrics themselves, and predictions for new texts."""

from typing import TYPE_CHECKING

from bert_eval.core._lazy import lazy_exports

if TYPE_CHECKING:
    from bert_eval.core.evaluation.batched import evaluate, load_eval_result
    from bert_eval.core.evaluation.cells import evaluate_cell, load_cell
    from bert_eval.core.evaluation.inference import predict
    from bert_eval.core.evaluation.predictions import Predictions, load_predictions
    from bert_eval.core.evaluation.task_metrics import compute_metrics, metric_names

__all__ = [
    "Predictions",
    "compute_metrics",
    "evaluate",
    "evaluate_cell",
    "load_cell",
    "load_eval_result",
    "load_predictions",
    "metric_names",
    "predict",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Predictions": "predictions",
        "compute_metrics": "task_metrics",
        "evaluate": "batched",
        "evaluate_cell": "cells",
        "load_cell": "cells",
        "load_eval_result": "batched",
        "load_predictions": "predictions",
        "metric_names": "task_metrics",
        "predict": "inference",
    },
)
