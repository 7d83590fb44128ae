"""An experiment's records as pandas DataFrames: one row per run, configuration, search trial or evaluation.

Pure functions of the records a finished experiment returns (`ExperimentResult`) and, for the runs'
hyperparameters and seeds, the experiment that was submitted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from bert_eval.core.records import EvalResult, PredictResult, RunInterval
from bert_eval.spec import Experiment, RunSpec
from bert_eval.temporal.payloads import ExperimentResult

__all__ = ["cells_frame", "configs_frame", "predictions_frame", "runs_frame", "trials_frame", "varying_params"]

_RUN_COLUMNS = [
    "run_id",
    "config",
    "seed",
    "state",
    "reused",
    "steps",
    "resumes",
    "train_seconds",
    "final_loss",
    "error",
]
_CONFIG_COLUMNS = [
    "config",
    "metric",
    "n",
    "mean",
    "std",
    "low",
    "high",
    "min",
    "max",
    "mark",
    "p_value",
    "best",
    "not_worse",
    "runs",
]
_TRIAL_COLUMNS = ["trial", "run_id", "rung", "steps", "state", "objective", "best", "train_seconds", "error"]
_CELL_COLUMNS = ["run_id", "config", "dataset", "split", "examples", "primary"]


def varying_params(specs: Iterable[RunSpec]) -> dict[str, dict[str, Any]]:
    """Per run id, the settings that differ between the runs (`model`, `train.<field>`), the seed aside:
    what tells one configuration from another."""
    specs = list(specs)
    flat = {
        spec.id: {"model": spec.model, **{f"train.{k}": v for k, v in spec.train.model_dump().items() if k != "seed"}}
        for spec in specs
    }
    keys = [key for key in next(iter(flat.values()), {}) if len({repr(params[key]) for params in flat.values()}) > 1]
    return {run_id: {key: params[key] for key in keys} for run_id, params in flat.items()}


def runs_frame(result: ExperimentResult, experiment: Experiment | None = None) -> pd.DataFrame:
    """One row per run: run_id, config, seed, the varying params (a search's trial params), state, reused,
    steps, resumes, train_seconds, final_loss, error, each metric, and the bounds of the run's bootstrap
    interval (`<metric>_low`, `<metric>_high`)."""
    specs = {spec.id: spec for spec in experiment.runs} if experiment is not None else {}
    params = varying_params(specs.values())
    if result.search is not None:
        params.update({trial.run_id: dict(trial.params) for trial in result.search.trials})
    intervals = {interval.run_id: interval for interval in result.summary.runs} if result.summary else {}
    rows = []
    for run in result.runs:
        training = run.training
        spec = specs.get(run.run_id)
        row: dict[str, Any] = {
            "run_id": run.run_id,
            "config": run.config,
            "seed": spec.train.seed if spec is not None else None,
            "state": run.status,
            "reused": run.reused,
            "steps": training.steps if training else None,
            "resumes": training.resumes if training else None,
            "train_seconds": training.wall_time_s if training else None,
            "final_loss": training.final_loss if training else None,
            "error": run.error,
            **params.get(run.run_id, {}),
            **run.metrics,
        }
        row.update(_bounds(intervals.get(run.run_id)))
        rows.append(row)
    return _frame(rows, _RUN_COLUMNS)


def configs_frame(result: ExperimentResult) -> pd.DataFrame:
    """One row per configuration: its metric over seeds (n, mean, std, 95% t-interval low/high, min, max),
    its mark against the best configuration and the p-value, `best` and `not_worse` (the best, or not
    significantly worse than it), and its run ids. Empty when the experiment has no summary."""
    configs = result.summary.configs if result.summary else []
    rows = []
    for config in configs:
        row = config.model_dump()
        row["best"] = config.mark == "best"
        row["not_worse"] = config.mark in ("best", "not significantly worse")
        rows.append(row)
    return _frame(rows, _CONFIG_COLUMNS)


def trials_frame(result: ExperimentResult) -> pd.DataFrame:
    """One row per search trial: trial, run_id, its params, rung reached, steps trained, state, objective
    (on the search slice), best, train_seconds, error and its final metrics. Empty when not a search."""
    search = result.search
    rows = []
    for trial in search.trials if search is not None else []:
        rows.append(
            {
                "trial": trial.trial,
                "run_id": trial.run_id,
                **trial.params,
                "rung": trial.rung,
                "steps": trial.steps,
                "state": trial.state.value,
                "objective": trial.objective,
                "best": trial.run_id == search.best if search is not None else False,
                "train_seconds": trial.train_seconds,
                "error": trial.error,
                **(trial.metrics or {}),
            }
        )
    return _frame(rows, _TRIAL_COLUMNS)


def cells_frame(result: ExperimentResult) -> pd.DataFrame:
    """The evaluation matrix, one row per evaluation of a run: run_id, config, dataset, split, examples,
    primary (the run's first evaluation), each metric and the interval bounds of its summary metric."""
    intervals = {(i.run_id, i.dataset, i.split): i for i in result.summary.matrix} if result.summary else {}
    primary_dataset = {i.run_id: i.dataset for i in result.summary.runs} if result.summary else {}
    rows = []
    for run in result.runs:
        evaluations: list[tuple[str | None, EvalResult, bool]] = [
            (cell.dataset, cell.evaluation, False) for cell in run.cells
        ]
        if run.evaluation is not None:
            evaluations.insert(0, (primary_dataset.get(run.run_id), run.evaluation, True))
        for dataset, evaluation, primary in evaluations:
            row: dict[str, Any] = {
                "run_id": run.run_id,
                "config": run.config,
                "dataset": dataset,
                "split": evaluation.split,
                "examples": evaluation.examples,
                "primary": primary,
                **evaluation.metrics,
            }
            row.update(_bounds(intervals.get((run.run_id, dataset, evaluation.split))))
            rows.append(row)
    return _frame(rows, _CELL_COLUMNS)


def predictions_frame(result: PredictResult) -> pd.DataFrame:
    """One row per text: text, label (the dataset's own label name), and for classification label_id and
    confidence (the predicted label's probability), for regression score."""
    if result.scores is not None:
        columns: Mapping[str, list[Any]] = {
            "text": result.texts,
            "label": result.predicted_labels,
            "score": result.scores,
        }
    else:
        columns = {
            "text": result.texts,
            "label": result.predicted_labels,
            "label_id": result.predicted_label_ids,
            "confidence": result.confidences,
        }
    return pd.DataFrame(dict(columns))


def _bounds(interval: RunInterval | None) -> dict[str, float | None]:
    if interval is None:
        return {}
    return {f"{interval.metric}_low": interval.low, f"{interval.metric}_high": interval.high}


def _frame(rows: list[dict[str, Any]], leading: list[str]) -> pd.DataFrame:
    """`rows` with the `leading` columns first (present even with no rows), the rest in first-seen order."""
    columns = list(leading)
    for row in rows:
        columns += [key for key in row if key not in columns]
    return pd.DataFrame.from_records(rows, columns=columns)
