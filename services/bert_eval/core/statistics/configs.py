"""A configuration's interval that includes test-set variance, and flags for results that decide nothing.

`config_interval`: the configuration's expected metric over training seeds and over evaluation sets drawn like
this one, the quantity Bouthillier et al. (2021) ask a benchmark to estimate, rather than its mean over seeds on
this one evaluation set. Its variance has parts from examples and from seeds:

- over examples, from the bootstrap over examples (the same resampled rows for every seed): c, what all k
  seeds share when the evaluation rows are redrawn (the mean covariance between different seeds' metrics),
  and v, the variance each seed's metric has alone (its own row-level noise: mean variance minus c). For a
  metric that is the mean of a per-example term (accuracy, mse) these are the ideal bootstrap's, the
  per-example terms' (co)variances over the rows divided by their number, computed exactly; for any other
  metric they are estimated from resamples;
- over seeds: the seed effect, (s² − v) / k (at least 0), the seeds' sample variance on this evaluation set
  less their own row-level noise, over their number.

The variance of the mean is (s² − v)/k + v/k + c, and the interval mean ± t·sqrt of it, with Satterthwaite's
degrees of freedom: k − 1 for the seed effect, examples − 1 for the row terms. Counting each seed's row-level
noise with the rows, rather than with the k − 1 degrees of freedom of s², is what keeps few seeds calibrated.

A nested percentile bootstrap (resample seeds, then rows) is not used: with 2-5 seeds the resampled means take
a handful of values and its interval covers far below nominal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from bert_eval.core.statistics.comparisons import (
    _MEAN_OF,
    BOOTSTRAP_SEED,
    CONFIDENCE,
    MetricInterval,
    _scorer,
    check_comparable,
)
from bert_eval.spec import TaskType

if TYPE_CHECKING:
    from bert_eval.core.evaluation.predictions import Predictions

__all__ = ["config_interval", "constant_prediction"]

# Resamples of the evaluation rows for a metric that is not a mean of per-example terms.
COVARIANCE_RESAMPLES = 500


def config_interval(
    runs: Sequence[Predictions],
    metric: str,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = COVARIANCE_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> MetricInterval:
    """The interval of a configuration's expected metric over seeds and evaluation sets, from one run per seed
    evaluated on the same rows. None ends with one run. ValueError (naming the runs) when the runs were
    evaluated on different rows, or `runs` is empty."""
    if not runs:
        raise ValueError("a configuration interval needs one or more runs")
    for run in runs[1:]:
        check_comparable(runs[0], run)
    if metric in _MEAN_OF:
        values = np.array([np.mean(_MEAN_OF[metric](run.predicted, run.labels)) for run in runs])
    else:
        score = _scorer(runs[0], metric)
        values = np.array([score(run.predicted, run.labels) for run in runs])
    k, examples = len(runs), len(runs[0])
    mean = float(np.mean(values))
    method = f"seeds then examples: {k} seeds, {examples} examples, Satterthwaite t-interval"
    if k < 2:
        return MetricInterval(metric=metric, value=mean, low=None, high=None, confidence=confidence, method=method)
    # The seeds' spread s² holds the seed effect and each seed's own row-level noise; the second is measured
    # over the rows (many degrees of freedom), leaving only the seed effect to the k − 1 of s².
    own_noise, shared = _row_covariances(runs, metric, n_resamples=n_resamples, seed=seed)
    seed_effect = max(float(np.var(values, ddof=1)) - own_noise, 0.0) / k
    from_rows = own_noise / k + shared
    total = seed_effect + from_rows
    if total == 0.0:
        return MetricInterval(metric=metric, value=mean, low=mean, high=mean, confidence=confidence, method=method)
    denominator = seed_effect**2 / (k - 1) + from_rows**2 / max(examples - 1, 1)
    df = total**2 / denominator if denominator > 0 else float(k - 1)
    half = float(stats.t.ppf(1 - (1 - confidence) / 2, df)) * float(np.sqrt(total))
    return MetricInterval(
        metric=metric, value=mean, low=mean - half, high=mean + half, confidence=confidence, method=method
    )


def _row_covariances(runs: Sequence[Predictions], metric: str, *, n_resamples: int, seed: int) -> tuple[float, float]:
    """Under the bootstrap over examples (the same resampled rows for every seed): the variance of one seed's
    metric that no other seed shares, and the mean covariance between two different seeds' metrics (each ≥ 0)."""
    examples = len(runs[0])
    if metric in _MEAN_OF:
        terms = np.stack([_MEAN_OF[metric](run.predicted, run.labels) for run in runs])
        covariance = np.cov(terms, bias=True) / examples
    else:
        score = _scorer(runs[0], metric)
        rng = np.random.default_rng(seed)
        resampled = np.empty((n_resamples, len(runs)))
        for r in range(n_resamples):
            rows = rng.integers(0, examples, examples)
            resampled[r] = [score(run.predicted[rows], run.labels[rows]) for run in runs]
        covariance = np.cov(resampled, rowvar=False)
    k = len(runs)
    within = float(np.trace(covariance)) / k
    between = (float(np.sum(covariance)) - float(np.trace(covariance))) / (k * (k - 1))
    return max(within - between, 0.0), max(between, 0.0)


def constant_prediction(run: Predictions) -> str | None:
    """A flag, with what to change, when the run predicts one class (or one score) for every row; else None."""
    rows = len(run)
    if rows == 0:
        return None
    if run.task is TaskType.classification:
        classes = np.unique(run.predicted)
        if len(classes) != 1 or run.num_labels < 2:
            return None
        predicted = int(classes[0])
        name = run.label_names[predicted] if 0 <= predicted < len(run.label_names) else str(predicted)
        share = float(np.mean(run.labels == predicted))
        return (
            f"run {run.run_id} predicts class {name!r} for all {rows} rows of {run.split}: its accuracy "
            f"({share:.3f}) is that class's share of the rows, and F1 or MCC of a one-class model say nothing; "
            "train longer (more steps or epochs) or try another learning-rate range"
        )
    if float(np.ptp(run.predicted)) == 0.0:
        return (
            f"run {run.run_id} predicts the same score ({float(run.predicted[0]):.4g}) for all {rows} rows of "
            f"{run.split}: its correlations are undefined; train longer or try another learning-rate range"
        )
    return None
