"""The statistics against independent computations: the bootstrap redone with numpy from the same seed,
McNemar's p from the binomial formula, t-intervals and Welch's test from their closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bert_eval.core.evaluation import task_metrics as metrics
from bert_eval.core.evaluation.predictions import Predictions
from bert_eval.core.statistics.comparisons import (
    BOOTSTRAP_SEED,
    compare_configs,
    compare_runs,
    mark_best,
    mcnemar_exact,
    metric_interval,
    summarize_seeds,
)
from bert_eval.spec import TaskType


def _classified(run_id: str, labels: np.ndarray, predicted: np.ndarray, *, digest: str = "rows-1") -> Predictions:
    return Predictions(
        run_id=run_id, split="validation", snapshot_id="snap", rows_digest=digest, task=TaskType.classification,
        label_names=("0", "1"), rows=np.arange(len(labels)), labels=labels, predicted=predicted, probabilities=None,
    )


def _scored(run_id: str, labels: np.ndarray, predicted: np.ndarray) -> Predictions:
    return Predictions(
        run_id=run_id, split="validation", snapshot_id="snap", rows_digest="rows-1", task=TaskType.regression,
        label_names=(), rows=np.arange(len(labels)), labels=labels, predicted=predicted, probabilities=None,
    )


def _noisy(labels: np.ndarray, accuracy: float, rng: np.random.Generator) -> np.ndarray:
    """A binary classifier right on about `accuracy` of the rows, wrong at random on the rest."""
    return np.where(rng.random(len(labels)) < accuracy, labels, 1 - labels)


def _resampled(n: int, n_resamples: int) -> np.ndarray:
    """The example indices the bootstrap draws: n_resamples rows of n indices from the fixed seed."""
    return np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, (n_resamples, n))


@pytest.mark.parametrize("metric", ["accuracy", "f1", "mcc"])
def test_a_runs_interval_is_the_percentile_bootstrap_of_its_metric(metric: str) -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 60)
    run = _classified("one", labels, _noisy(labels, 0.75, rng))
    interval = metric_interval(run, metric, n_resamples=300)

    score = metrics.metric_function(metric, task=TaskType.classification, num_labels=2)
    resampled = [score(run.predicted[i], labels[i]) for i in _resampled(60, 300)]
    low, high = np.percentile(resampled, [2.5, 97.5])
    assert interval.value == metrics.classification_metrics(run.predicted, labels, num_labels=2)[metric]
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-12)
    assert interval.low <= interval.value <= interval.high
    # The seed is fixed: the same predictions give the same interval.
    assert metric_interval(run, metric, n_resamples=300) == interval


@pytest.mark.parametrize("metric", ["accuracy", "mcc"])
def test_a_paired_difference_resamples_both_runs_with_the_same_examples(metric: str) -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 80)
    a, b = _classified("a", labels, _noisy(labels, 0.8, rng)), _classified("b", labels, _noisy(labels, 0.7, rng))
    comparison = compare_runs(a, b, metric, n_resamples=400)

    score = metrics.metric_function(metric, task=TaskType.classification, num_labels=2)
    differences = np.array([score(a.predicted[i], labels[i]) - score(b.predicted[i], labels[i]) for i in _resampled(80, 400)])
    low, high = np.percentile(differences, [2.5, 97.5])
    assert comparison.difference.value == pytest.approx(score(a.predicted, labels) - score(b.predicted, labels))
    assert (comparison.difference.low, comparison.difference.high) == pytest.approx((low, high), abs=1e-12)
    assert comparison.prob_a_better == pytest.approx(np.mean(differences > 0))
    if metric != "accuracy":  # the paired bootstrap's own two-sided p
        tail = min(np.sum(differences <= 0), np.sum(differences >= 0))
        assert comparison.p_value == pytest.approx(min(1.0, 2 * (tail + 1) / 401))


def test_mcnemar_exact_p_is_the_two_sided_binomial_tail_of_the_discordant_pairs() -> None:
    # 2x2 table: both right 30, only A right 9, only B right 2, both wrong 5.
    a_correct = np.array([True] * 30 + [True] * 9 + [False] * 2 + [False] * 5)
    b_correct = np.array([True] * 30 + [False] * 9 + [True] * 2 + [False] * 5)
    discordant = 11
    by_hand = min(1.0, 2 * sum(math.comb(discordant, k) for k in range(3)) / 2**discordant)
    test = mcnemar_exact(a_correct, b_correct)
    assert (test.a_only_correct, test.b_only_correct) == (9, 2)
    assert test.p_value == pytest.approx(by_hand)

    # The same table as two runs' predictions: accuracy is compared with McNemar's p.
    labels = np.ones(46, dtype=np.int64)
    comparison = compare_runs(
        _classified("a", labels, a_correct.astype(np.int64)), _classified("b", labels, b_correct.astype(np.int64)), n_resamples=200
    )
    assert comparison.p_value == pytest.approx(by_hand) and comparison.mcnemar == test
    assert comparison.test == "McNemar exact test, 46 examples"


def test_identical_runs_differ_by_nothing() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 100)
    predicted = _noisy(labels, 0.8, rng)
    for metric in ("accuracy", "f1"):
        comparison = compare_runs(_classified("a", labels, predicted), _classified("b", labels, predicted.copy()), metric, n_resamples=200)
        assert comparison.difference.value == comparison.difference.low == comparison.difference.high == 0.0
        assert comparison.p_value == 1.0 and not comparison.significant and comparison.prob_a_better == 0.0
        assert comparison.sentence.startswith(f"no significant difference between a and b on {metric} (a − b = 0.0 points")


def test_runs_of_equal_quality_are_rarely_called_different() -> None:
    rng = np.random.default_rng(4)
    called_different = 0
    for _ in range(40):
        labels = rng.integers(0, 2, 300)
        a, b = _classified("a", labels, _noisy(labels, 0.8, rng)), _classified("b", labels, _noisy(labels, 0.8, rng))
        called_different += compare_runs(a, b, n_resamples=200).significant
    assert called_different <= 6  # about 2 of 40 expected at the 5% level


def test_a_real_gap_is_significant_and_named_in_the_winners_favour() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 400)
    good, weak = _classified("good", labels, _noisy(labels, 0.9, rng)), _classified("weak", labels, _noisy(labels, 0.72, rng))

    forward = compare_runs(good, weak, n_resamples=500)
    assert forward.significant and forward.p_value < 1e-6 and forward.prob_a_better > 0.99
    assert 0 < forward.difference.low < forward.difference.value < forward.difference.high
    d = forward.difference
    assert forward.sentence == (
        f"good is better than weak on accuracy by {d.value * 100:.1f} points, 95% CI [{d.low * 100:.1f}, {d.high * 100:.1f}], "
        "p < 0.001 (McNemar exact test, 400 examples)"
    )
    # Asked the other way round: the winner still comes first, with the same interval.
    backward = compare_runs(weak, good, n_resamples=500, a_name="baseline", b_name="candidate")
    assert backward.difference.value == pytest.approx(-d.value) and backward.prob_a_better < 0.01
    assert backward.sentence.startswith(f"candidate is better than baseline on accuracy by {d.value * 100:.1f} points, 95% CI [")
    assert f"[{d.low * 100:.1f}, {d.high * 100:.1f}]" in backward.sentence


def test_smaller_mse_wins_and_mse_is_resampled_like_its_metric() -> None:
    rng = np.random.default_rng(6)
    labels = rng.uniform(0, 5, 120).astype(np.float32)
    close = _scored("close", labels, (labels + rng.normal(0, 0.3, 120)).astype(np.float32))
    far = _scored("far", labels, (labels + rng.normal(0, 1.2, 120)).astype(np.float32))

    comparison = compare_runs(close, far, "mse", n_resamples=300)
    mse = metrics.metric_function("mse", task=TaskType.regression, num_labels=1)
    differences = [mse(close.predicted[i], labels[i]) - mse(far.predicted[i], labels[i]) for i in _resampled(120, 300)]
    assert (comparison.difference.low, comparison.difference.high) == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])))
    assert comparison.difference.value < 0 and comparison.significant and comparison.mcnemar is None
    assert comparison.sentence.startswith("close is better than far on mse (lower is better) by ")
    assert compare_runs(close, far, n_resamples=300).metric == "pearson"  # regression's headline metric


def test_runs_on_different_rows_or_tasks_are_refused_with_the_cause() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 50)
    a = _classified("run-a", labels, _noisy(labels, 0.8, rng))
    elsewhere = _classified("run-b", labels, _noisy(labels, 0.8, rng), digest="rows-2")
    with pytest.raises(ValueError, match="runs run-a and run-b were evaluated on different rows"):
        compare_runs(a, elsewhere)
    shorter = _classified("run-c", labels[:40], a.predicted[:40])
    with pytest.raises(ValueError, match="evaluated on different rows .*same dataset, split and max_eval_samples"):
        compare_runs(a, shorter)
    scored = _scored("run-d", labels.astype(np.float32), labels.astype(np.float32))
    with pytest.raises(ValueError, match="run run-a is a classification run and run run-d a regression run"):
        compare_runs(a, scored)
    with pytest.raises(ValueError, match="run run-a: classification runs have no metric 'pearson'"):
        compare_runs(a, a, "pearson")


def test_a_seed_summary_is_mean_spread_and_the_t_interval_of_the_mean() -> None:
    values = [0.91, 0.88, 0.93, 0.9]
    summary = summarize_seeds("base", values, "accuracy")
    mean = sum(values) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    half = scipy_stats.t.ppf(0.975, 3) * std / math.sqrt(4)
    assert (summary.n, summary.min, summary.max) == (4, 0.88, 0.93)
    assert summary.mean == pytest.approx(mean) and summary.std == pytest.approx(std)
    assert (summary.mean_interval.low, summary.mean_interval.high) == pytest.approx((mean - half, mean + half))

    single = summarize_seeds("once", [0.9], "accuracy")
    assert single.std is None and single.mean_interval.low is None and single.mean_interval.high is None
    assert "no confidence interval" in single.note
    with pytest.raises(ValueError, match="configuration empty has no runs"):
        summarize_seeds("empty", [], "accuracy")


def test_configs_are_compared_seed_by_seed() -> None:
    a = summarize_seeds("large", [0.92, 0.915, 0.93, 0.925, 0.94, 0.918], "accuracy")
    b = summarize_seeds("small", [0.90, 0.905, 0.91, 0.915, 0.92, 0.917], "accuracy")
    comparison = compare_configs(a, b, paired_by="seed")
    differences = np.array(a.values) - np.array(b.values)
    half = scipy_stats.t.ppf(0.975, 5) * np.std(differences, ddof=1) / math.sqrt(6)
    assert comparison.difference.value == pytest.approx(differences.mean())
    assert (comparison.difference.low, comparison.difference.high) == pytest.approx((differences.mean() - half, differences.mean() + half))
    # Every difference positive: the exact two-sided signed-rank p is 2 / 2**6.
    assert comparison.p_value == pytest.approx(2 / 64) and comparison.significant and comparison.note is None
    assert comparison.sentence.startswith("large is better than small on accuracy by ")
    assert "(mean over 6 seeds, Wilcoxon signed-rank test, 6 seed pairs)" in comparison.sentence

    # Under 6 pairs the signed-rank test cannot reach p < 0.05: the paired t-test, checked by hand.
    few = compare_configs(summarize_seeds("x", a.values[:3], "accuracy"), summarize_seeds("y", b.values[:3], "accuracy"))
    d = differences[:3]
    t = d.mean() / (np.std(d, ddof=1) / math.sqrt(3))
    assert few.p_value == pytest.approx(2 * scipy_stats.t.sf(abs(t), 2)) and few.significant
    assert "paired t-test, 3 seed pairs" in few.sentence and "6 or more seeds per configuration" in few.sentence

    same = compare_configs(a, summarize_seeds("copy", a.values, "accuracy"))
    assert same.p_value == 1.0 and not same.significant and same.difference.low == same.difference.high == 0.0

    once = compare_configs(summarize_seeds("x", [0.9], "accuracy"), summarize_seeds("y", [0.8], "accuracy"))
    assert once.p_value is None and once.difference.low is None
    assert once.sentence == "cannot tell whether x or y is better on accuracy from one seed each (x − y = 10.0 points); run more seeds"
    with pytest.raises(ValueError, match="configuration large has 6 runs and x has 1"):
        compare_configs(a, summarize_seeds("x", [0.9], "accuracy"))


def test_the_best_config_and_those_not_significantly_worse_are_marked() -> None:
    best = summarize_seeds("best", [0.93, 0.94, 0.935, 0.945], "accuracy")
    close = summarize_seeds("close", [0.925, 0.945, 0.93, 0.94], "accuracy")
    poor = summarize_seeds("poor", [0.85, 0.86, 0.855, 0.84], "accuracy")
    once = summarize_seeds("once", [0.92], "accuracy")
    marks = {mark.name: mark for mark in mark_best([poor, close, best, once])}
    assert [m.status for m in marks.values()] == ["significantly worse", "not significantly worse", "best", "untested"]

    # Welch's one-sided t-test, by hand.
    x, y = np.array(best.values), np.array(poor.values)
    vx, vy = x.var(ddof=1) / 4, y.var(ddof=1) / 4
    t = (x.mean() - y.mean()) / math.sqrt(vx + vy)
    df = (vx + vy) ** 2 / (vx**2 / 3 + vy**2 / 3)
    assert marks["poor"].p_value == pytest.approx(scipy_stats.t.sf(t, df))

    # Smaller is better for mse.
    low_mse = summarize_seeds("low", [0.2, 0.21, 0.19], "mse")
    high_mse = summarize_seeds("high", [0.5, 0.52, 0.49], "mse")
    assert [m.status for m in mark_best([high_mse, low_mse])] == ["significantly worse", "best"]
