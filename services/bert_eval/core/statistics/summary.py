"""An experiment's statistics from its runs on disk: each run's metric with a bootstrap interval over its
evaluation examples; each configuration's mean over its seeds with a t-interval, and with the interval that
adds test-set variance (core/statistics/configs.py); which configurations are significantly worse than another
(all pairs, Holm); and flags for results that decide nothing. The statistics themselves are
core/statistics/comparisons.py's and configs.py's."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation.predictions import Predictions, predictions_of
from bert_eval.core.records import ConfigStats, EvalResult, ExperimentSummary, RunInterval
from bert_eval.core.statistics.comparisons import (
    BestMark,
    ConfigSummary,
    default_metric,
    mark_best,
    metric_interval,
    summarize_seeds,
)
from bert_eval.core.statistics.configs import config_interval, constant_prediction
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


@dataclass(frozen=True)
class _Evaluated:
    interval: RunInterval
    predictions: Predictions | None


def summarize_runs(runs: Sequence[RunOutcome]) -> ExperimentSummary:
    """The experiment's statistics over its completed runs' primary evaluations (and every cell's interval)."""
    notes: list[str] = []
    flags: list[str] = []
    primary: list[_Evaluated] = []
    matrix: list[RunInterval] = []
    for run in runs:
        found = _evaluated(run, run.dataset, run.evaluation, notes)
        if found is not None:
            primary.append(found)
            flag = constant_prediction(found.predictions) if found.predictions is not None else None
            if flag is not None:
                flags.append(flag)
        matrix += [
            cell.interval for dataset, evaluation in run.cells if (cell := _evaluated(run, dataset, evaluation, notes))
        ]

    configs: dict[tuple[str, str], list[_Evaluated]] = {}
    for item in primary:
        configs.setdefault((item.interval.config, item.interval.metric), []).append(item)
    summaries = {
        key: summarize_seeds(key[0], [m.interval.value for m in members], key[1]) for key, members in configs.items()
    }
    marks: dict[tuple[str, str], BestMark] = {}
    for metric in sorted({key[1] for key in summaries}):
        group = [summary for key, summary in summaries.items() if key[1] == metric]
        group_marks = mark_best(group)
        marks.update({(mark.name, metric): mark for mark in group_marks})
        flags += _table_flags(group, group_marks)
    stats = [
        _config_stats(summary, configs[key], marks.get(key), ranked=len(summaries) > 1)
        for key, summary in summaries.items()
    ]
    intervals = [item.interval for item in primary]
    return ExperimentSummary(
        split=",".join(sorted({run.evaluation.split for run in runs})),
        configs=stats,
        runs=intervals,
        matrix=intervals + matrix,
        notes=notes,
        flags=flags,
    )


def _config_stats(
    summary: ConfigSummary, members: list[_Evaluated], mark: BestMark | None, *, ranked: bool
) -> ConfigStats:
    population_low = population_high = None
    kept = [m.predictions for m in members if m.predictions is not None]
    if len(kept) == len(members) and len(kept) > 1:
        try:
            found = config_interval(kept, summary.metric)
            population_low, population_high = found.low, found.high
        except ValueError as exc:  # its runs were evaluated on different rows
            log.warning("configuration %s: no interval over seeds and examples (%s)", summary.name, exc)
    one_class = [m for m in kept if constant_prediction(m) is not None]
    flag = None
    if kept and len(one_class) == len(members):
        flag = (
            f"every run of {summary.name} predicts one class (or one score) for every row: its {summary.metric} "
            "measures the label balance, not the model; train longer or try another learning-rate range"
        )
    return ConfigStats(
        config=summary.name,
        metric=summary.metric,
        runs=[m.interval.run_id for m in members],
        n=summary.n,
        mean=summary.mean,
        std=summary.std,
        min=summary.min,
        max=summary.max,
        low=summary.mean_interval.low,
        high=summary.mean_interval.high,
        population_low=population_low,
        population_high=population_high,
        mark=mark.status if mark and ranked else None,
        p_value=mark.p_value if mark and ranked else None,
        against=mark.against if mark and ranked else None,
        flag=flag,
    )


def _table_flags(group: Sequence[ConfigSummary], marks: Sequence[BestMark]) -> list[str]:
    """A ranking that decides nothing: no testable pair, or no configuration significantly worse than another."""
    if len(group) < 2:
        return []
    metric = group[0].metric
    if all(mark.status in ("best", "untested") for mark in marks):
        return [
            f"the configurations' ranking on {metric} cannot be tested: a comparison needs 2 or more seeds on both "
            "sides, with some spread; set `seeds:` to 2 or more (`bert-eval plan` estimates how many)"
        ]
    if not any(mark.status == "significantly worse" for mark in marks):
        return [
            f"all {len(group)} configurations are within seed noise of each other on {metric} (no pair differs "
            "significantly, Welch's test over seeds, Holm over all pairs): the best is not better than the rest; "
            "run more seeds per configuration (`bert-eval plan` says how many) or try configurations further apart"
        ]
    return []


def _evaluated(run: RunOutcome, dataset: str, evaluation: EvalResult, notes: list[str]) -> _Evaluated | None:
    """One evaluation's headline metric with its bootstrap interval over the evaluation's examples."""
    metric = _headline_metric(evaluation.metrics)
    if metric is None:
        notes.append(f"run {run.run_id}: no metrics on {dataset} {evaluation.split}")
        return None
    where = {
        "run_id": run.run_id,
        "config": run.config,
        "dataset": dataset,
        "split": evaluation.split,
        "metric": metric,
    }
    try:
        predictions = predictions_of(evaluation)
    except InvalidInputError as exc:
        # Evaluated before predictions were kept (or they were removed): the value, without an interval.
        notes.append(f"run {run.run_id}: no interval on {dataset} {evaluation.split} ({exc})")
        return _Evaluated(RunInterval(**where, value=evaluation.metrics[metric]), None)
    found = metric_interval(predictions, metric)
    return _Evaluated(RunInterval(**where, value=found.value, low=found.low, high=found.high), predictions)


def _headline_metric(metrics: dict[str, float]) -> str | None:
    for task in (TaskType.classification, TaskType.regression):
        if default_metric(task) in metrics:
            return default_metric(task)
    return None
