"""How sure a metric is, and whether one run or configuration beats another: pure functions (scipy).

- `metric_interval`: a run's metric with a percentile-bootstrap CI over its evaluation examples.
- `compare_runs`: two runs evaluated on the same rows. The difference A − B with a paired bootstrap CI
  (example indices resampled jointly), the share of resamples where A is better, and a p-value: McNemar's
  exact test for accuracy, the paired bootstrap's two-sided p for every other metric. McNemar's counts
  are reported for every classification comparison.
- `summarize_seeds`: one configuration's metric over its seeds (mean, std, range, t-interval of the mean).
- `compare_configs`: seed i of A against seed i of B (Wilcoxon signed-rank), and the mean difference
  with a t-interval.
- `mark_best`: the best configuration of a results table, and which others are not significantly worse.

Metrics are the very functions `compute_metrics` reports (core/evaluation/task_metrics.py). Resampling uses a fixed seed,
so the same predictions always give the same intervals. The percentile method is used rather than BCa:
BCa's jackknife costs one metric evaluation per example, and it is undefined when every resample agrees
(two identical runs).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import stats

from bert_eval.core.evaluation.task_metrics import metric_function, metric_names
from bert_eval.spec import TaskType, higher_is_better

if TYPE_CHECKING:
    from bert_eval.core.evaluation.predictions import Predictions

__all__ = [
    "BOOTSTRAP_SEED",
    "BestMark",
    "ConfigComparison",
    "ConfigSummary",
    "McNemarTest",
    "MetricInterval",
    "RunComparison",
    "check_comparable",
    "compare_configs",
    "compare_runs",
    "default_metric",
    "higher_is_better",
    "mark_best",
    "mcnemar_exact",
    "metric_interval",
    "summarize_seeds",
]

BOOTSTRAP_SEED = 162024  # fixed: the same predictions always give the same intervals
N_RESAMPLES = 2000
CONFIDENCE = 0.95
ALPHA = 0.05
# Metrics bounded by ±1, stated in points (hundredths) in sentences.
_IN_POINTS = frozenset({"accuracy", "f1", "mcc", "pearson", "spearman"})
# Metrics that are the mean of a per-example term (`accuracy_score`, `mean_squared_error`): resampled as
# those terms, all resamples at once, instead of one metric call per resample.
_MEAN_OF: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": lambda predicted, labels: (predicted == labels).astype(float),
    "mse": lambda predicted, labels: (np.asarray(predicted, dtype=float) - np.asarray(labels, dtype=float)) ** 2,
}
# Resampled indices held in memory at once (the bootstrap draws them in batches of resamples).
_BATCH_INDICES = 1 << 22
# The fewest seed pairs with which a two-sided Wilcoxon signed-rank test can reach p < 0.05 (2 / 2**6).
MIN_WILCOXON_PAIRS = 6


def default_metric(task: TaskType) -> str:
    """The metric a comparison uses unless told otherwise: accuracy, or Pearson's r for regression."""
    return metric_names(task)[0]


class _Record:
    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (floats, ints, strings, lists, nulls)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class MetricInterval(_Record):
    """A metric value with its confidence interval; `low`/`high` are None where no interval exists."""

    metric: str
    value: float
    low: float | None
    high: float | None
    confidence: float
    method: str


@dataclass(frozen=True)
class McNemarTest(_Record):
    """Discordant examples of two classification runs, and McNemar's exact (binomial) p-value."""

    a_only_correct: int
    b_only_correct: int
    p_value: float


@dataclass(frozen=True)
class RunComparison(_Record):
    """Run A against run B on the same evaluation rows."""

    a: str
    b: str
    metric: str
    examples: int
    a_value: MetricInterval
    b_value: MetricInterval
    difference: MetricInterval  # A − B
    prob_a_better: float  # share of bootstrap resamples where A is better than B
    p_value: float
    test: str
    mcnemar: McNemarTest | None
    significant: bool
    sentence: str


@dataclass(frozen=True)
class ConfigSummary(_Record):
    """One configuration's metric over its seeds. `std` and the interval are None with a single seed."""

    name: str
    metric: str
    values: tuple[float, ...]
    n: int
    mean: float
    std: float | None
    min: float
    max: float
    mean_interval: MetricInterval
    note: str | None = None


@dataclass(frozen=True)
class ConfigComparison(_Record):
    """Configuration A against configuration B, seed against seed."""

    a: ConfigSummary
    b: ConfigSummary
    metric: str
    paired_by: str
    differences: tuple[float, ...]  # A − B per seed pair
    difference: MetricInterval  # mean of the differences, with its t-interval
    p_value: float | None
    test: str
    significant: bool
    note: str | None
    sentence: str


BestStatus = Literal["best", "not significantly worse", "significantly worse", "untested"]


@dataclass(frozen=True)
class BestMark(_Record):
    """Where a configuration stands against the best one in a results table."""

    name: str
    mean: float
    status: BestStatus
    p_value: float | None  # one-sided Welch t-test: is the best one better than this one?


# --------------------------------------------------------------------------- one run


def metric_interval(
    run: Predictions,
    metric: str | None = None,
    *,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> MetricInterval:
    """The run's metric over its evaluation examples, with a percentile-bootstrap interval."""
    metric = metric or default_metric(run.task)
    score = _scorer(run, metric)
    if metric in _MEAN_OF:
        terms = _MEAN_OF[metric](run.predicted, run.labels)
        result = _bootstrap((terms,), np.mean, confidence=confidence, n_resamples=n_resamples, seed=seed, vectorized=True)
    else:
        result = _bootstrap((run.predicted, run.labels), score, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return MetricInterval(
        metric=metric,
        value=score(run.predicted, run.labels),
        low=float(result.confidence_interval.low),
        high=float(result.confidence_interval.high),
        confidence=confidence,
        method=_bootstrap_method(len(run), n_resamples, seed),
    )


# --------------------------------------------------------------------------- two runs


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemarTest:
    """McNemar's exact test: under equal accuracy, each discordant example is a fair coin toss."""
    a_only = int(np.sum(a_correct & ~b_correct))
    b_only = int(np.sum(b_correct & ~a_correct))
    p_value = 1.0 if a_only + b_only == 0 else float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return McNemarTest(a_only_correct=a_only, b_only_correct=b_only, p_value=p_value)


def compare_runs(
    a: Predictions,
    b: Predictions,
    metric: str | None = None,
    *,
    a_name: str | None = None,
    b_name: str | None = None,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> RunComparison:
    """A against B on the rows both were evaluated on. ValueError (naming both runs) when they were
    evaluated on different rows or are not the same kind of task."""
    check_comparable(a, b)
    metric = metric or default_metric(a.task)
    score = _scorer(a, metric)

    if metric in _MEAN_OF:
        terms = _MEAN_OF[metric]

        def mean_terms(terms_a: np.ndarray, terms_b: np.ndarray, axis: int) -> np.ndarray:
            value_a, value_b = np.mean(terms_a, axis=axis), np.mean(terms_b, axis=axis)
            return np.stack([value_a, value_b, value_a - value_b])

        samples = (terms(a.predicted, a.labels), terms(b.predicted, b.labels))
        result = _bootstrap(samples, mean_terms, vectorized=True, confidence=confidence, n_resamples=n_resamples, seed=seed)
    else:

        def both(predicted_a: np.ndarray, predicted_b: np.ndarray, labels: np.ndarray) -> np.ndarray:
            value_a, value_b = score(predicted_a, labels), score(predicted_b, labels)
            return np.array([value_a, value_b, value_a - value_b])

        result = _bootstrap((a.predicted, b.predicted, a.labels), both, confidence=confidence, n_resamples=n_resamples, seed=seed)
    low, high = result.confidence_interval.low, result.confidence_interval.high
    method = _bootstrap_method(len(a), n_resamples, seed)
    value_a, value_b = score(a.predicted, a.labels), score(b.predicted, b.labels)
    intervals = [
        MetricInterval(metric=metric, value=value, low=float(low[i]), high=float(high[i]), confidence=confidence, method=method)
        for i, value in enumerate((value_a, value_b, value_a - value_b))
    ]
    # Resampled improvements of A over B (A − B, sign-flipped where smaller is better).
    sign = 1.0 if higher_is_better(metric) else -1.0
    improvements = sign * result.bootstrap_distribution[2]

    mcnemar = None
    if a.task is TaskType.classification:
        mcnemar = mcnemar_exact(a.predicted == a.labels, b.predicted == b.labels)
    if mcnemar is not None and metric == "accuracy":
        p_value, test = mcnemar.p_value, f"McNemar exact test, {len(a)} examples"
    else:
        # Two-sided: twice the smaller share of resamples on either side of no difference (+1 smoothing).
        tail = min(np.sum(improvements <= 0), np.sum(improvements >= 0))
        p_value = min(1.0, 2 * (int(tail) + 1) / (n_resamples + 1))
        test = f"paired bootstrap, {len(a)} examples"
    significant = p_value < 1 - confidence
    names = (a_name or a.run_id, b_name or b.run_id)
    return RunComparison(
        a=names[0],
        b=names[1],
        metric=metric,
        examples=len(a),
        a_value=intervals[0],
        b_value=intervals[1],
        difference=intervals[2],
        prob_a_better=float(np.mean(improvements > 0)),
        p_value=p_value,
        test=test,
        mcnemar=mcnemar,
        significant=significant,
        sentence=_sentence(names, intervals[2], p_value=p_value, test=test, significant=significant),
    )


def check_comparable(a: Predictions, b: Predictions) -> None:
    """ValueError naming both runs unless they are the same task evaluated on the same rows."""
    if a.task is not b.task:
        raise ValueError(
            f"run {a.run_id} is a {a.task.value} run and run {b.run_id} a {b.task.value} run: their metrics do not "
            "compare; compare runs of the same task"
        )
    same_rows = (
        a.rows_digest == b.rows_digest
        and np.array_equal(a.rows, b.rows)
        and np.array_equal(a.labels, b.labels)
        and a.label_names == b.label_names
    )
    if not same_rows:
        raise ValueError(
            f"runs {a.run_id} and {b.run_id} were evaluated on different rows ({len(a)} rows of split {a.split!r} in "
            f"snapshot {a.snapshot_id}, {len(b)} rows of split {b.split!r} in snapshot {b.snapshot_id}); a paired "
            "comparison needs the same evaluation rows: evaluate both on the same dataset, split and max_eval_samples"
        )


# --------------------------------------------------------------------------- seeds and configurations


def summarize_seeds(name: str, values: Sequence[float], metric: str, *, confidence: float = CONFIDENCE) -> ConfigSummary:
    """Mean, spread and t-interval of the mean of one configuration's metric over its seeds."""
    if len(values) == 0:
        raise ValueError(f"configuration {name} has no runs with a {metric} result to summarize")
    array = np.asarray(values, dtype=float)
    mean = float(np.mean(array))
    interval = _t_interval(array, metric, confidence)
    note = None if len(array) > 1 else "one seed: no spread and no confidence interval; run more seeds"
    return ConfigSummary(
        name=name,
        metric=metric,
        values=tuple(float(v) for v in array),
        n=len(array),
        mean=mean,
        std=float(np.std(array, ddof=1)) if len(array) > 1 else None,
        min=float(np.min(array)),
        max=float(np.max(array)),
        mean_interval=interval,
        note=note,
    )


def compare_configs(
    a: ConfigSummary, b: ConfigSummary, *, paired_by: str = "position", confidence: float = CONFIDENCE
) -> ConfigComparison:
    """Seed i of A against seed i of B (`values` in the same seed order on both sides)."""
    if a.metric != b.metric:
        raise ValueError(f"configurations {a.name} ({a.metric}) and {b.name} ({b.metric}) summarize different metrics")
    if a.n != b.n:
        raise ValueError(
            f"configuration {a.name} has {a.n} runs and {b.name} has {b.n}: a seed-by-seed comparison needs the same "
            "seeds on both sides; give each the same number of runs, in the same seed order"
        )
    metric = a.metric
    differences = np.asarray(a.values) - np.asarray(b.values)
    difference = _t_interval(differences, metric, confidence)
    # The signed-rank test assumes nothing about the differences' distribution, but under 6 pairs it cannot
    # reach p < 0.05 at all (its smallest p is 2 / 2**n): fewer pairs get the paired t-test instead.
    wilcoxon = a.n >= MIN_WILCOXON_PAIRS
    test = f"{'Wilcoxon signed-rank test' if wilcoxon else 'paired t-test'}, {a.n} seed pairs"
    p_value: float | None = None
    note: str | None = None
    if a.n < 2:
        note = "one seed per side: no test and no confidence interval; run more seeds"
    elif np.all(differences == 0):
        p_value, note = 1.0, "identical results on every seed"
    elif wilcoxon:
        p_value = float(stats.wilcoxon(a.values, b.values).pvalue)
    else:
        p_value = float(stats.ttest_rel(a.values, b.values).pvalue)
        if not math.isfinite(p_value):  # every difference equal: no spread to test against
            p_value = 0.0
        note = (
            f"with {a.n} seed pairs: a paired t-test, which assumes the per-seed differences are roughly normal; "
            f"{MIN_WILCOXON_PAIRS} or more seeds per configuration get the distribution-free Wilcoxon test"
        )
    significant = p_value is not None and p_value < 1 - confidence
    names = (a.name, b.name)
    if p_value is None:
        sentence = (
            f"cannot tell whether {a.name} or {b.name} is better on {metric} from one seed each "
            f"({a.name} − {b.name} = {_amount(metric, difference.value)}); run more seeds"
        )
    else:
        sentence = _sentence(names, difference, p_value=p_value, test=test, significant=significant, over=f"mean over {a.n} seeds")
    return ConfigComparison(
        a=a,
        b=b,
        metric=metric,
        paired_by=paired_by,
        differences=tuple(float(d) for d in differences),
        difference=difference,
        p_value=p_value,
        test=test,
        significant=significant,
        note=note,
        sentence=sentence + (f"; {note}" if note and p_value is not None else ""),
    )


def mark_best(summaries: Sequence[ConfigSummary], *, alpha: float = ALPHA) -> tuple[BestMark, ...]:
    """The configuration with the best mean, and for every other one whether it is significantly worse
    (one-sided Welch t-test against the best, which needs two seeds on both sides); in input order."""
    if not summaries:
        return ()
    metrics = {s.metric for s in summaries}
    if len(metrics) > 1:
        raise ValueError(f"a results table ranks one metric at a time; got {sorted(metrics)}")
    higher = higher_is_better(summaries[0].metric)
    best = max(summaries, key=lambda s: s.mean if higher else -s.mean)
    marks = []
    for summary in summaries:
        if summary is best:
            marks.append(BestMark(name=summary.name, mean=summary.mean, status="best", p_value=None))
            continue
        p_value = None
        if summary.n > 1 and best.n > 1:
            with np.errstate(divide="ignore", invalid="ignore"):
                tested = stats.ttest_ind(best.values, summary.values, equal_var=False, alternative="greater" if higher else "less")
            p_value = float(tested.pvalue) if math.isfinite(tested.pvalue) else None
        status: BestStatus
        if p_value is None:
            status = "untested"
        else:
            status = "significantly worse" if p_value < alpha else "not significantly worse"
        marks.append(BestMark(name=summary.name, mean=summary.mean, status=status, p_value=p_value))
    return tuple(marks)


# --------------------------------------------------------------------------- helpers


def _scorer(run: Predictions, metric: str) -> Callable[[np.ndarray, np.ndarray], float]:
    try:
        return metric_function(metric, task=run.task, num_labels=run.num_labels)
    except ValueError as exc:
        raise ValueError(f"run {run.run_id}: {exc}") from None


def _bootstrap(
    samples: tuple[np.ndarray, ...],
    statistic: Callable[..., Any],
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
    vectorized: bool = False,
) -> Any:
    """Percentile bootstrap resampling the examples (the same indices in every array)."""
    return stats.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=vectorized,
        n_resamples=n_resamples,
        batch=max(1, min(n_resamples, _BATCH_INDICES // len(samples[0]))),
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )


def _bootstrap_method(examples: int, n_resamples: int, seed: int) -> str:
    return f"percentile bootstrap over {examples} examples, {n_resamples} resamples, seed {seed}"


def _t_interval(values: np.ndarray, metric: str, confidence: float) -> MetricInterval:
    mean = float(np.mean(values))
    method = f"t-interval of the mean over {len(values)} seeds"
    if len(values) < 2:
        return MetricInterval(metric=metric, value=mean, low=None, high=None, confidence=confidence, method=method)
    sem = float(stats.sem(values))
    if sem == 0.0:  # every seed agrees: the interval is the point
        low = high = mean
    else:
        low, high = (float(x) for x in stats.t.interval(confidence, len(values) - 1, loc=mean, scale=sem))
    return MetricInterval(metric=metric, value=mean, low=low, high=high, confidence=confidence, method=method)


def _amount(metric: str, value: float) -> str:
    return f"{value * 100:.1f} points" if metric in _IN_POINTS else f"{value:.3g}"


def _number(metric: str, value: float) -> str:
    return f"{value * 100:.1f}" if metric in _IN_POINTS else f"{value:.3g}"


def _p(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def _sentence(
    names: tuple[str, str],
    difference: MetricInterval,
    *,
    p_value: float,
    test: str,
    significant: bool,
    over: str | None = None,
) -> str:
    """'A is better than B on accuracy by 1.2 points, 95% CI [0.3, 2.1], p = 0.01 (...)', or 'no
    significant difference between A and B on accuracy (A − B = ..., 95% CI [...], p = ...)'."""
    metric, level = difference.metric, f"{difference.confidence * 100:g}%"
    low, high = difference.low, difference.high
    detail = ", ".join(x for x in (over, test) if x)
    if not significant:
        interval = f", {level} CI [{_number(metric, low)}, {_number(metric, high)}]" if low is not None and high is not None else ""
        return (
            f"no significant difference between {names[0]} and {names[1]} on {metric} "
            f"({names[0]} − {names[1]} = {_amount(metric, difference.value)}{interval}, {_p(p_value)}, {detail})"
        )
    # Stated as the winner's improvement: flip A − B (and its interval) when B wins or smaller is better.
    a_wins = (difference.value > 0) == higher_is_better(metric)
    winner, loser = names if a_wins else names[::-1]
    flip = 1.0 if a_wins == higher_is_better(metric) else -1.0
    by = flip * difference.value
    bounds = sorted(flip * x for x in (low, high) if x is not None)
    interval = f", {level} CI [{_number(metric, bounds[0])}, {_number(metric, bounds[1])}]" if len(bounds) == 2 else ""
    lower = " (lower is better)" if not higher_is_better(metric) else ""
    return f"{winner} is better than {loser} on {metric}{lower} by {_amount(metric, abs(by))}{interval}, {_p(p_value)} ({detail})"
