"""How sure a metric is, and whether one run or configuration beats another: pure functions (scipy).

- `metric_interval`: a run's metric with a percentile-bootstrap CI over its evaluation examples.
- `compare_runs`: two runs evaluated on the same rows; one method gives both the verdict and the interval.
  Accuracy: McNemar's test (no continuity correction) with Tango's score interval, its inversion
  (core/statistics/mcnemar.py). Every other metric: the paired bootstrap (example indices resampled jointly),
  its percentile interval and its two-sided p, the share of resamples on the far side of no difference.
- `summarize_seeds`: one configuration's metric over its seeds (mean, std, range, t-interval of the mean over
  seeds on this evaluation set); core/statistics/configs.py adds the interval that includes test-set variance.
- `compare_configs`: paired only by the training seed each run records (both sides hold the same seeds): the
  sign-flip permutation test of the mean difference with the interval that inverts it (core/statistics/
  signflip.py), exact up to 14 pairs. Otherwise unpaired: Welch's t-test and its interval. Both report the
  probability that a run of A beats a run of B over seeds (Bouthillier et al. 2021).
- `mark_best`: the best configuration of a results table, and which others are significantly worse than some
  configuration, with the familywise error over all pairs controlled: Welch's t-test for every pair of
  configurations with two seeds or more, Holm's step-down correction over all those pairs. Comparing only
  against the best by mean would ignore that the best was chosen from the same data.

A comparison no test can support (one seed a side, too few pairs that differ, identical results, too few rows
that differ) has no p-value: its sentence says why and what to change. Metrics are the very functions
`compute_metrics` reports (core/evaluation/task_metrics.py). Resampling uses a fixed seed, so the same
predictions always give the same intervals. The percentile method is used rather than BCa: BCa's jackknife costs
one metric evaluation per example, and it is undefined when every resample agrees (two identical runs).
"""

from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import stats

from bert_eval.core.evaluation.task_metrics import metric_function, metric_names
from bert_eval.core.statistics.mcnemar import paired_accuracy
from bert_eval.core.statistics.signflip import sign_flip_test, smallest_p
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
    "holm",
    "mark_best",
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


def default_metric(task: TaskType) -> str:
    """The metric a comparison uses unless told otherwise: accuracy, or Pearson's r for regression."""
    return metric_names(task)[0]


class _Record:
    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (floats, ints, strings, lists, nulls)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class MetricInterval(_Record):
    """A metric value with its confidence interval; `low`/`high` are None where no interval exists (one seed)
    or an end is unbounded (too few seed pairs for the sign-flip interval to exclude anything)."""

    metric: str
    value: float
    low: float | None
    high: float | None
    confidence: float
    method: str


@dataclass(frozen=True)
class McNemarTest(_Record):
    """Discordant examples of two classification runs and McNemar's test (χ², no continuity correction);
    `statistic` and `p_value` are None when too few examples differ for any outcome to be significant."""

    a_only_correct: int
    b_only_correct: int
    statistic: float | None
    p_value: float | None


@dataclass(frozen=True)
class RunComparison(_Record):
    """Run A against run B on the same evaluation rows. `p_value` None: no test can decide (see `note`)."""

    a: str
    b: str
    metric: str
    examples: int
    a_value: MetricInterval
    b_value: MetricInterval
    difference: MetricInterval  # A − B, with the interval of the method that gives the verdict
    p_value: float | None
    test: str
    mcnemar: McNemarTest | None  # accuracy comparisons
    significant: bool
    note: str | None
    sentence: str


@dataclass(frozen=True)
class ConfigSummary(_Record):
    """One configuration's metric over its seeds. `std` and the interval are None with a single seed.
    `seeds` are the training seeds of `values`, in the same order, where every run recorded one."""

    name: str
    metric: str
    values: tuple[float, ...]
    n: int
    mean: float
    std: float | None
    min: float
    max: float
    mean_interval: MetricInterval  # t-interval of the mean over seeds, on this evaluation set
    note: str | None = None
    seeds: tuple[int, ...] | None = None
    # The configuration's expected metric over seeds and evaluation sets (core/statistics/configs.py).
    with_test_set: MetricInterval | None = None


@dataclass(frozen=True)
class ConfigComparison(_Record):
    """Configuration A against configuration B over seeds: paired by training seed, or unpaired."""

    a: ConfigSummary
    b: ConfigSummary
    metric: str
    paired_by: Literal["seed", "unpaired"]
    differences: tuple[float, ...]  # A − B per seed pair, in seed order; empty when unpaired
    difference: MetricInterval  # mean(A) − mean(B), with the interval of the test that gives the verdict
    p_value: float | None  # None: no test can decide (see `note`)
    test: str
    significant: bool
    # The chance that a run of A (a random seed) scores better than a run of B, ties counting half:
    # Bouthillier et al.'s probability of outperforming, over all pairs of seeds (over the seed pairs when paired).
    prob_a_beats_b: float
    note: str | None
    sentence: str


BestStatus = Literal["best", "not significantly worse", "significantly worse", "untested"]


@dataclass(frozen=True)
class BestMark(_Record):
    """Where a configuration stands in a results table. `p_value`: the Holm-adjusted two-sided Welch p-value
    against `against`, the better configuration it differs from most clearly (None: no such pair tested)."""

    name: str
    mean: float
    status: BestStatus
    p_value: float | None
    against: str | None = None


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
        result = _bootstrap(
            (terms,), np.mean, confidence=confidence, n_resamples=n_resamples, seed=seed, vectorized=True
        )
    else:
        result = _bootstrap(
            (run.predicted, run.labels), score, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    return MetricInterval(
        metric=metric,
        value=score(run.predicted, run.labels),
        low=float(result.confidence_interval.low),
        high=float(result.confidence_interval.high),
        confidence=confidence,
        method=_bootstrap_method(len(run), n_resamples, seed),
    )


# --------------------------------------------------------------------------- two runs


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
    """A against B on the rows both were evaluated on: accuracy by McNemar's test with Tango's interval, any
    other metric by the paired bootstrap. ValueError (naming both runs) when they were evaluated on different
    rows or are not the same kind of task."""
    check_comparable(a, b)
    metric = metric or default_metric(a.task)
    names = (a_name or a.run_id, b_name or b.run_id)
    if metric == "accuracy" and a.task is TaskType.classification:
        return _compare_accuracy(a, b, names, confidence=confidence, n_resamples=n_resamples, seed=seed)
    return _compare_by_bootstrap(a, b, metric, names, confidence=confidence, n_resamples=n_resamples, seed=seed)


def _compare_accuracy(
    a: Predictions, b: Predictions, names: tuple[str, str], *, confidence: float, n_resamples: int, seed: int
) -> RunComparison:
    found = paired_accuracy(a.predicted == a.labels, b.predicted == b.labels, confidence=confidence)
    examples = len(a)
    difference = MetricInterval(
        metric="accuracy",
        value=found.difference,
        low=found.low,
        high=found.high,
        confidence=confidence,
        method=f"Tango's score interval, {examples} examples",
    )
    test = f"McNemar's test, {examples} examples"
    significant = found.p_value is not None and found.p_value < 1 - confidence
    note = None
    if found.p_value is None:
        discordant = found.a_only + found.b_only
        note = (
            f"they agree on all {examples} rows"
            if discordant == 0
            else f"they differ on {discordant} of {examples} rows, too few for any outcome of McNemar's test to "
            f"reach p < {1 - confidence:g}"
        )
        note += "; evaluate both on more rows"
    values = [
        metric_interval(run, "accuracy", confidence=confidence, n_resamples=n_resamples, seed=seed) for run in (a, b)
    ]
    return RunComparison(
        a=names[0],
        b=names[1],
        metric="accuracy",
        examples=examples,
        a_value=values[0],
        b_value=values[1],
        difference=difference,
        p_value=found.p_value,
        test=test,
        mcnemar=McNemarTest(
            a_only_correct=found.a_only, b_only_correct=found.b_only, statistic=found.statistic, p_value=found.p_value
        ),
        significant=significant,
        note=note,
        sentence=_verdict(names, difference, p_value=found.p_value, test=test, significant=significant, note=note),
    )


def _compare_by_bootstrap(
    a: Predictions,
    b: Predictions,
    metric: str,
    names: tuple[str, str],
    *,
    confidence: float,
    n_resamples: int,
    seed: int,
) -> RunComparison:
    score = _scorer(a, metric)
    if metric in _MEAN_OF:
        terms = _MEAN_OF[metric]

        def mean_terms(terms_a: np.ndarray, terms_b: np.ndarray, axis: int) -> np.ndarray:
            value_a, value_b = np.mean(terms_a, axis=axis), np.mean(terms_b, axis=axis)
            return np.stack([value_a, value_b, value_a - value_b])

        samples = (terms(a.predicted, a.labels), terms(b.predicted, b.labels))
        result = _bootstrap(
            samples, mean_terms, vectorized=True, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    else:

        def both(predicted_a: np.ndarray, predicted_b: np.ndarray, labels: np.ndarray) -> np.ndarray:
            value_a, value_b = score(predicted_a, labels), score(predicted_b, labels)
            return np.array([value_a, value_b, value_a - value_b])

        result = _bootstrap(
            (a.predicted, b.predicted, a.labels), both, confidence=confidence, n_resamples=n_resamples, seed=seed
        )
    low, high = result.confidence_interval.low, result.confidence_interval.high
    method = _bootstrap_method(len(a), n_resamples, seed)
    value_a, value_b = score(a.predicted, a.labels), score(b.predicted, b.labels)
    intervals = [
        MetricInterval(
            metric=metric, value=value, low=float(low[i]), high=float(high[i]), confidence=confidence, method=method
        )
        for i, value in enumerate((value_a, value_b, value_a - value_b))
    ]
    resampled = result.bootstrap_distribution[2]
    test = f"paired bootstrap, {len(a)} examples"
    p_value: float | None = None
    note = None
    if np.all(resampled == 0):
        note = f"their predictions give the same {metric} on every resample of the {len(a)} rows"
    else:
        p_value = _percentile_p(resampled)
    significant = p_value is not None and p_value < 1 - confidence
    return RunComparison(
        a=names[0],
        b=names[1],
        metric=metric,
        examples=len(a),
        a_value=intervals[0],
        b_value=intervals[1],
        difference=intervals[2],
        p_value=p_value,
        test=test,
        mcnemar=None,
        significant=significant,
        note=note,
        sentence=_verdict(names, intervals[2], p_value=p_value, test=test, significant=significant, note=note),
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


def summarize_seeds(
    name: str,
    values: Sequence[float],
    metric: str,
    *,
    seeds: Sequence[int] | None = None,
    confidence: float = CONFIDENCE,
) -> ConfigSummary:
    """Mean, spread and t-interval of the mean of one configuration's metric over its seeds. `seeds`: the
    training seed of each value, where known (comparisons pair configurations by it). ValueError for no values
    or a `seeds` of another length."""
    if len(values) == 0:
        raise ValueError(f"configuration {name} has no runs with a {metric} result to summarize")
    if seeds is not None and len(seeds) != len(values):
        raise ValueError(f"configuration {name}: {len(seeds)} seeds for {len(values)} values")
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
        seeds=tuple(int(s) for s in seeds) if seeds is not None else None,
    )


def compare_configs(a: ConfigSummary, b: ConfigSummary, *, confidence: float = CONFIDENCE) -> ConfigComparison:
    """A against B over seeds. Paired (exact sign-flip test) only when both record the same distinct training
    seeds and enough pairs differ for the test to reach significance; otherwise unpaired (Welch's t-test), with
    a note saying why. ValueError when the two summarize different metrics."""
    if a.metric != b.metric:
        raise ValueError(f"configurations {a.name} ({a.metric}) and {b.name} ({b.metric}) summarize different metrics")
    pairs = _seed_pairs(a, b)
    if pairs is None:
        return _compare_unpaired(a, b, confidence=confidence)
    differences = pairs[0] - pairs[1]
    differ = int(np.count_nonzero(differences))
    if smallest_p(differences) < 1 - confidence:
        return _compare_paired(a, b, differences, confidence=confidence)
    needed = _pairs_needed(1 - confidence)
    why = (
        f"identical results on all {a.n} seeds"
        if differ == 0
        else f"the exact paired test cannot reach p < {1 - confidence:g} with {differ} seed pairs that differ "
        f"(it needs {needed}), so the seeds are compared unpaired; {needed} or more seeds per configuration get it"
    )
    if differ == 0:
        return _compare_paired(a, b, differences, confidence=confidence, note=why)
    return _compare_unpaired(a, b, confidence=confidence, reason=why)


def _seed_pairs(a: ConfigSummary, b: ConfigSummary) -> tuple[np.ndarray, np.ndarray] | None:
    """Both sides' values in seed order, when each records the same set of distinct seeds."""
    if a.seeds is None or b.seeds is None or len(set(a.seeds)) != a.n or set(a.seeds) != set(b.seeds) or b.n != a.n:
        return None
    order_a, order_b = np.argsort(a.seeds), np.argsort(b.seeds)
    return np.asarray(a.values)[order_a], np.asarray(b.values)[order_b]


def _compare_paired(
    a: ConfigSummary, b: ConfigSummary, differences: np.ndarray, *, confidence: float, note: str | None = None
) -> ConfigComparison:
    """The exact sign-flip test; `note` set when it cannot decide (then no p-value)."""
    metric, n = a.metric, a.n
    found = sign_flip_test(differences, confidence=confidence)
    exact = "exact " if found.exact else ""
    difference = MetricInterval(
        metric=metric,
        value=float(np.mean(differences)),
        low=found.low,
        high=found.high,
        confidence=confidence,
        method=f"{exact}sign-flip permutation interval over {n} seed pairs",
    )
    test = f"{exact}sign-flip permutation test, {n} seed pairs"
    p_value = found.p_value if note is None else None
    sign = 1.0 if higher_is_better(metric) else -1.0
    wins = np.sign(sign * differences)
    return _config_comparison(
        a,
        b,
        paired_by="seed",
        differences=tuple(float(d) for d in differences),
        difference=difference,
        p_value=p_value,
        test=test,
        prob_a_beats_b=float(np.mean((wins + 1) / 2)),
        note=note,
        over=f"mean over {n} seeds",
    )


def _compare_unpaired(
    a: ConfigSummary, b: ConfigSummary, *, confidence: float, reason: str | None = None
) -> ConfigComparison:
    """Welch's t-test and interval; `reason`: why seeds that could be paired are not."""
    metric = a.metric
    test = f"Welch's t-test, {a.n} and {b.n} seeds, unpaired"
    value = a.mean - b.mean
    low = high = p_value = None
    note = None
    if a.n < 2 or b.n < 2:
        fewest = a if a.n < 2 else b
        note = f"{fewest.name} has one seed: no spread to test against; run 2 or more seeds per configuration"
    elif not a.std and not b.std:
        note = "every seed gave the same value on each side: no spread to test against; run more seeds"
    else:
        with warnings.catch_warnings():  # seeds of equal value on one side: exact, not a loss of precision
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.ttest_ind(a.values, b.values, equal_var=False)
        interval = result.confidence_interval(confidence)
        p_value, low, high = float(result.pvalue), float(interval.low), float(interval.high)
    if note is not None and reason is None:
        note += "; give both the same training seeds to compare seed by seed"
    if reason is not None:
        note = reason if note is None else f"{note}; {reason}"
    difference = MetricInterval(
        metric=metric,
        value=value,
        low=low,
        high=high,
        confidence=confidence,
        method=f"Welch's t-interval, {a.n} and {b.n} seeds",
    )
    u_statistic = stats.mannwhitneyu(a.values, b.values, alternative="two-sided").statistic
    beats = float(u_statistic) / (a.n * b.n)
    return _config_comparison(
        a,
        b,
        paired_by="unpaired",
        differences=(),
        difference=difference,
        p_value=p_value,
        test=test,
        prob_a_beats_b=beats if higher_is_better(metric) else 1.0 - beats,
        note=note,
        over="difference of means over seeds",
    )


def _config_comparison(
    a: ConfigSummary,
    b: ConfigSummary,
    *,
    paired_by: Literal["seed", "unpaired"],
    differences: tuple[float, ...],
    difference: MetricInterval,
    p_value: float | None,
    test: str,
    prob_a_beats_b: float,
    note: str | None,
    over: str,
) -> ConfigComparison:
    """The comparison record of either test: significant when `p_value` is below 1 − the interval's
    confidence, and its one-line verdict (`over`: what the difference is taken over)."""
    significant = p_value is not None and p_value < 1 - difference.confidence
    return ConfigComparison(
        a=a,
        b=b,
        metric=a.metric,
        paired_by=paired_by,
        differences=differences,
        difference=difference,
        p_value=p_value,
        test=test,
        significant=significant,
        prob_a_beats_b=prob_a_beats_b,
        note=note,
        sentence=_verdict(
            (a.name, b.name), difference, p_value=p_value, test=test, significant=significant, note=note, over=over
        ),
    )


def _pairs_needed(alpha: float) -> int:
    """The fewest differing seed pairs with which the sign-flip test can reach p < alpha (2 / 2**m < alpha)."""
    m = 1
    while 2.0 / 2.0**m >= alpha:
        m += 1
    return m


def mark_best(summaries: Sequence[ConfigSummary], *, alpha: float = ALPHA) -> tuple[BestMark, ...]:
    """The configuration with the best mean, and for every other one whether it is significantly worse than
    some configuration with a better mean; in input order.

    Every pair of configurations with two seeds or more on both sides is tested (two-sided Welch t-test) and
    the p-values are adjusted together (Holm), so that with all configurations truly equal the chance of
    marking any one significantly worse is at most `alpha`, whichever was best by chance. A configuration with
    one seed, or whose every pair is untestable (no spread on either side), is "untested". ValueError when the
    summaries are of different metrics."""
    if not summaries:
        return ()
    metrics = {s.metric for s in summaries}
    if len(metrics) > 1:
        raise ValueError(f"a results table ranks one metric at a time; got {sorted(metrics)}")
    higher = higher_is_better(summaries[0].metric)
    best = max(summaries, key=lambda s: s.mean if higher else -s.mean)
    tested, p_values = _welch_all_pairs(summaries)
    adjusted = holm(p_values)
    # For each configuration, its tested pairs with a better configuration: (adjusted p, that configuration).
    beaten_by: dict[int, list[tuple[float, int]]] = {}
    involved: set[int] = set()
    for (i, j), p_value in zip(tested, adjusted, strict=True):
        involved.update((i, j))
        worse, better = (i, j) if (summaries[j].mean > summaries[i].mean) == higher else (j, i)
        beaten_by.setdefault(worse, []).append((p_value, better))
        if summaries[i].mean == summaries[j].mean:  # a tie: each side is as much the "worse" one
            beaten_by.setdefault(better, []).append((p_value, worse))
    marks = []
    for index, summary in enumerate(summaries):
        clearest = min(beaten_by.get(index, []), default=None)
        status: BestStatus
        if summary is best:
            status = "best"
        elif index not in involved:
            status = "untested"
        elif clearest is not None and clearest[0] < alpha:
            status = "significantly worse"
        else:
            status = "not significantly worse"
        marks.append(
            BestMark(
                name=summary.name,
                mean=summary.mean,
                status=status,
                p_value=clearest[0] if clearest else None,
                against=summaries[clearest[1]].name if clearest else None,
            )
        )
    return tuple(marks)


def _welch_all_pairs(summaries: Sequence[ConfigSummary]) -> tuple[list[tuple[int, int]], list[float]]:
    """Welch's two-sided p for every pair with two seeds or more on both sides and some spread; pairs of the
    same sizes in one vectorized scipy call."""
    by_sizes: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for i, j in itertools.combinations(range(len(summaries)), 2):
        x, y = summaries[i], summaries[j]
        if x.n >= 2 and y.n >= 2 and (x.std or y.std):
            by_sizes.setdefault((x.n, y.n), []).append((i, j))
    tested: list[tuple[int, int]] = []
    p_values: list[float] = []
    for pairs in by_sizes.values():
        first = np.array([summaries[i].values for i, _ in pairs])
        second = np.array([summaries[j].values for _, j in pairs])
        tested += pairs
        with warnings.catch_warnings():  # seeds of equal value on one side: exact, not a loss of precision
            warnings.simplefilter("ignore", RuntimeWarning)
            found = stats.ttest_ind(first, second, axis=1, equal_var=False).pvalue
        p_values += [float(p) for p in found]
    return tested, p_values


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order (Holm 1979): the k-th smallest p times the number
    of hypotheses not yet rejected, made non-decreasing, capped at 1. scipy has no familywise correction."""
    m = len(p_values)
    order = np.argsort(p_values, kind="stable")
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return [float(p) for p in adjusted]


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


def _percentile_p(resampled: np.ndarray) -> float:
    """The smallest α at which the (1 − α) percentile interval (linear interpolation, as scipy's) leaves out
    zero: twice the interpolated share of resamples below zero (or above it), so that p < α exactly when the
    interval printed beside it excludes zero. Never below 1 / resamples."""
    ordered = np.sort(np.asarray(resampled, dtype=float))
    count = len(ordered)

    def crossing(at_or_below: int) -> float:
        # Interpolated quantile level where the sorted resamples pass zero, given how many lie at or below it.
        if at_or_below == 0:
            return 0.0
        if at_or_below == count:
            return 1.0
        below, above = ordered[at_or_below - 1], ordered[at_or_below]
        return (at_or_below - 1 + (0.0 - below) / (above - below)) / (count - 1)

    lower_tail = crossing(int(np.sum(ordered <= 0)))  # the interval's low end is above zero for α/2 beyond this
    upper_tail = 1.0 - crossing(int(np.sum(ordered < 0)))
    return float(min(1.0, max(2 * min(lower_tail, upper_tail), 1.0 / count)))


def _bootstrap_method(examples: int, n_resamples: int, seed: int) -> str:
    return f"percentile bootstrap over {examples} examples, {n_resamples} resamples, seed {seed}"


def _t_interval(values: np.ndarray, metric: str, confidence: float) -> MetricInterval:
    """Student's t-interval of the mean of `values` (None ends with one value; the point when all agree)."""
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


def _verdict(
    names: tuple[str, str],
    difference: MetricInterval,
    *,
    p_value: float | None,
    test: str,
    significant: bool,
    note: str | None,
    over: str | None = None,
) -> str:
    """The comparison's one-line verdict; without a p-value, why no test can decide and what to change."""
    if p_value is not None:
        said = _sentence(names, difference, p_value=p_value, test=test, significant=significant, over=over)
        return f"{said}; {note}" if note else said
    metric, level = difference.metric, f"{difference.confidence * 100:g}%"
    interval = ""
    if difference.low is not None and difference.high is not None:
        interval = f", {level} CI [{_number(metric, difference.low)}, {_number(metric, difference.high)}]"
    detail = ", ".join(x for x in (over, test) if x)
    return (
        f"cannot tell whether {names[0]} or {names[1]} is better on {metric}: {note} "
        f"({names[0]} − {names[1]} = {_amount(metric, difference.value)}{interval}, no p-value, {detail})"
    )


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
        interval = (
            f", {level} CI [{_number(metric, low)}, {_number(metric, high)}]"
            if low is not None and high is not None
            else ""
        )
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
    amount = _amount(metric, abs(by))
    return f"{winner} is better than {loser} on {metric}{lower} by {amount}{interval}, {_p(p_value)} ({detail})"
