"""An experiment's statistics from its runs on disk: each run's metric with a bootstrap interval over its
evaluation examples, each configuration's mean over its seeds with a t-interval, and which configurations
are not significantly worse than the best one. The statistics themselves are core/statistics/comparisons.py's."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation.predictions import predictions_of
from bert_eval.core.records import ConfigStats, EvalResult, ExperimentSummary, RunInterval
from bert_eval.core.statistics.comparisons import default_metric, mark_best, metric_interval, summarize_seeds
from bert_eval.spec import TaskType

__all__ = ["RunOutcome", "summarize_runs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    """A completed run: its configuration, its primary evaluation, and its other cells (dataset, evaluation)."""

    run_id: str
    config: str
    dataset: str
    evaluation: EvalResult
    cells: tuple[tuple[str, EvalResult], ...] = ()


def summarize_runs(runs: Sequence[RunOutcome]) -> ExperimentSummary:
    notes: list[str] = []
    intervals: list[RunInterval] = []
    matrix: list[RunInterval] = []
    for run in runs:
        primary = _interval(run, run.dataset, run.evaluation, notes)
        if primary is not None:
            intervals.append(primary)
        matrix += [cell for dataset, evaluation in run.cells if (cell := _interval(run, dataset, evaluation, notes)) is not None]

    configs: dict[tuple[str, str], list[RunInterval]] = {}
    for interval in intervals:
        configs.setdefault((interval.config, interval.metric), []).append(interval)
    summaries = {key: summarize_seeds(key[0], [r.value for r in members], key[1]) for key, members in configs.items()}
    marks = {}
    for metric in {key[1] for key in summaries}:
        group = [summary for key, summary in summaries.items() if key[1] == metric]
        marks.update({(mark.name, metric): mark for mark in mark_best(group)})
    stats = []
    for key, summary in summaries.items():
        mark = marks.get(key)
        stats.append(
            ConfigStats(
                config=summary.name,
                metric=summary.metric,
                runs=[r.run_id for r in configs[key]],
                n=summary.n,
                mean=summary.mean,
                std=summary.std,
                min=summary.min,
                max=summary.max,
                low=summary.mean_interval.low,
                high=summary.mean_interval.high,
                mark=mark.status if mark and len(summaries) > 1 else None,
                p_value=mark.p_value if mark else None,
            )
        )
    return ExperimentSummary(
        split=",".join(sorted({run.evaluation.split for run in runs})),
        configs=stats,
        runs=intervals,
        matrix=intervals + matrix,
        notes=notes,
    )


def _interval(run: RunOutcome, dataset: str, evaluation: EvalResult, notes: list[str]) -> RunInterval | None:
    """One evaluation's headline metric with its bootstrap interval over the evaluation's examples."""
    metric = _headline_metric(evaluation.metrics)
    if metric is None:
        notes.append(f"run {run.run_id}: no metrics on {dataset} {evaluation.split}")
        return None
    where = {"run_id": run.run_id, "config": run.config, "dataset": dataset, "split": evaluation.split, "metric": metric}
    try:
        predictions = predictions_of(evaluation)
    except InvalidInputError as exc:
        # Evaluated before predictions were kept (or they were removed): the value, without an interval.
        notes.append(f"run {run.run_id}: no interval on {dataset} {evaluation.split} ({exc})")
        return RunInterval(**where, value=evaluation.metrics[metric])
    found = metric_interval(predictions, metric)
    return RunInterval(**where, value=found.value, low=found.low, high=found.high)


def _headline_metric(metrics: dict[str, float]) -> str | None:
    for task in (TaskType.classification, TaskType.regression):
        if default_metric(task) in metrics:
            return default_metric(task)
    return None
