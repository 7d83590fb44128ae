"""The statistics against independent computations: the bootstrap redone with numpy from the same seed,
McNemar's χ² by its formula and Tango's interval from a numerically maximized likelihood, the sign-flip test
against scipy's permutation_test and its interval against a brute-force inversion, Welch's test, Holm's
correction and the configuration interval from their closed forms. Their calibration by simulation is
test_calibration.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize
from scipy import stats as scipy_stats
from support.predictions import classified, scored

from bert_eval.core.evaluation import task_metrics as metrics
from bert_eval.core.evaluation.predictions import Predictions
from bert_eval.core.statistics.comparisons import (
    BOOTSTRAP_SEED,
    compare_configs,
    compare_runs,
    holm,
    mark_best,
    metric_interval,
    summarize_seeds,
)
from bert_eval.core.statistics.configs import config_interval, constant_prediction
from bert_eval.core.statistics.mcnemar import paired_accuracy, tango_score
from bert_eval.core.statistics.power import plan_seeds, power_of
from bert_eval.core.statistics.signflip import sign_flip_test
from bert_eval.spec import TaskType


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
    run = classified("one", labels, _noisy(labels, 0.75, rng))
    interval = metric_interval(run, metric, n_resamples=300)

    score = metrics.metric_function(metric, task=TaskType.classification, num_labels=2)
    resampled = [score(run.predicted[i], labels[i]) for i in _resampled(60, 300)]
    low, high = np.percentile(resampled, [2.5, 97.5])
    assert interval.value == metrics.classification_metrics(run.predicted, labels, num_labels=2)[metric]
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-12)
    assert interval.low <= interval.value <= interval.high
    # The seed is fixed: the same predictions give the same interval.
    assert metric_interval(run, metric, n_resamples=300) == interval


def _correctness(a_only: int, b_only: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([True] * a_only + [False] * b_only + [True] * both + [False] * neither)
    b = np.array([False] * a_only + [True] * b_only + [True] * both + [False] * neither)
    return a, b


def _tango_by_likelihood(delta: float, b: int, c: int, n: int) -> float:
    """Tango's score at delta with the constrained maximum likelihood found numerically, not by its formula."""
    rest = n - b - c

    def minus_log_likelihood(p21: float) -> float:
        p12 = p21 + delta
        return -(b * math.log(p12) + c * math.log(p21) + rest * math.log(1 - p12 - p21))

    low, high = max(0.0, -delta) + 1e-12, (1 - delta) / 2 - 1e-12
    p21 = optimize.minimize_scalar(
        minus_log_likelihood, bounds=(low, high), method="bounded", options={"xatol": 1e-12}
    ).x
    return (b - c - n * delta) / math.sqrt(n * (2 * p21 + delta * (1 - delta)))


def test_accuracy_is_compared_by_mcnemars_test_and_tangos_interval_which_agree() -> None:
    # The case a bootstrap interval and an exact test disagreed on: 30 against 16 discordant rows of 872.
    a_correct, b_correct = _correctness(30, 16, 700, 126)
    found = paired_accuracy(a_correct, b_correct)
    assert (found.a_only, found.b_only, found.examples) == (30, 16, 872)
    assert found.statistic == pytest.approx((30 - 16) ** 2 / 46)
    assert found.p_value == pytest.approx(scipy_stats.chi2.sf(196 / 46, 1))
    assert found.difference == pytest.approx(14 / 872)
    # Each end is where Tango's score (likelihood maximized numerically here) reaches the normal quantile.
    z = scipy_stats.norm.ppf(0.975)
    assert _tango_by_likelihood(found.low, 30, 16, 872) == pytest.approx(z, abs=1e-6)
    assert _tango_by_likelihood(found.high, 30, 16, 872) == pytest.approx(-z, abs=1e-6)
    assert float(tango_score(0.0, 30, 16, 872)) == pytest.approx(math.sqrt(found.statistic))
    # One method: significant exactly when the interval leaves out zero, over many tables.
    rng = np.random.default_rng(11)
    for _ in range(300):
        b, c = (int(x) for x in rng.integers(0, 40, 2))
        table = paired_accuracy(*_correctness(b, c, 50, 10))
        if table.p_value is not None:
            assert (table.p_value < 0.05) == (table.low > 0 or table.high < 0), (b, c, table)


def test_runs_that_differ_on_too_few_rows_cannot_be_tested() -> None:
    labels = np.ones(200, dtype=np.int64)
    a_correct, b_correct = _correctness(3, 0, 150, 47)
    comparison = compare_runs(
        classified("a", labels, a_correct.astype(np.int64)),
        classified("b", labels, b_correct.astype(np.int64)),
        n_resamples=200,
    )
    assert comparison.p_value is None and not comparison.significant and comparison.mcnemar.p_value is None
    assert comparison.sentence.startswith(
        "cannot tell whether a or b is better on accuracy: they differ on 3 of 200 rows"
    )
    assert (
        "no p-value" in comparison.sentence
        and "p = " not in comparison.sentence
        and "evaluate both on more rows" in comparison.sentence
    )
    assert comparison.difference.low < 0 < comparison.difference.high  # Tango's interval still says how wide


@pytest.mark.parametrize("metric", ["mcc", "f1"])
def test_other_metrics_use_the_paired_bootstrap_for_interval_and_verdict(metric: str) -> None:
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 2, 80)
    a, b = classified("a", labels, _noisy(labels, 0.8, rng)), classified("b", labels, _noisy(labels, 0.7, rng))
    comparison = compare_runs(a, b, metric, n_resamples=400)

    score = metrics.metric_function(metric, task=TaskType.classification, num_labels=2)
    differences = np.array(
        [score(a.predicted[i], labels[i]) - score(b.predicted[i], labels[i]) for i in _resampled(80, 400)]
    )
    low, high = np.percentile(differences, [2.5, 97.5])
    assert comparison.difference.value == pytest.approx(score(a.predicted, labels) - score(b.predicted, labels))
    assert (comparison.difference.low, comparison.difference.high) == pytest.approx((low, high), abs=1e-12)

    # The p-value is the α at which the percentile interval's end reaches zero (found here by bisection).
    def excludes(alpha: float) -> bool:
        ends = np.percentile(differences, [50 * alpha, 100 - 50 * alpha])
        return bool(np.all(ends > 0) or np.all(ends < 0))

    low_alpha, high_alpha = 1 / 400, 1.0
    for _ in range(60):
        middle = (low_alpha + high_alpha) / 2
        low_alpha, high_alpha = (low_alpha, middle) if excludes(middle) else (middle, high_alpha)
    assert comparison.p_value == pytest.approx(max(high_alpha, 1 / 400), abs=1e-9)
    assert comparison.mcnemar is None and comparison.test == "paired bootstrap, 80 examples"
    assert comparison.significant == (comparison.difference.low > 0 or comparison.difference.high < 0)


def test_identical_runs_cannot_be_told_apart_and_get_no_p_value() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 100)
    predicted = _noisy(labels, 0.8, rng)
    for metric, why in (("accuracy", "they agree on all 100 rows"), ("f1", "their predictions give the same f1")):
        comparison = compare_runs(
            classified("a", labels, predicted), classified("b", labels, predicted.copy()), metric, n_resamples=200
        )
        assert comparison.difference.value == 0.0 and comparison.p_value is None and not comparison.significant
        assert comparison.sentence.startswith(f"cannot tell whether a or b is better on {metric}: {why}")


def test_runs_of_equal_quality_are_rarely_called_different() -> None:
    rng = np.random.default_rng(4)
    called_different = 0
    for _ in range(40):
        labels = rng.integers(0, 2, 300)
        a, b = classified("a", labels, _noisy(labels, 0.8, rng)), classified("b", labels, _noisy(labels, 0.8, rng))
        called_different += compare_runs(a, b, n_resamples=200).significant
    assert called_different <= 6  # about 2 of 40 expected at the 5% level


def test_a_real_gap_is_significant_and_named_in_the_winners_favour() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 400)
    good, weak = (
        classified("good", labels, _noisy(labels, 0.9, rng)),
        classified("weak", labels, _noisy(labels, 0.72, rng)),
    )

    forward = compare_runs(good, weak, n_resamples=500)
    assert forward.significant and forward.p_value < 1e-6
    assert 0 < forward.difference.low < forward.difference.value < forward.difference.high
    d = forward.difference
    assert forward.sentence == (
        f"good is better than weak on accuracy by {d.value * 100:.1f} points, "
        f"95% CI [{d.low * 100:.1f}, {d.high * 100:.1f}], "
        "p < 0.001 (McNemar's test, 400 examples)"
    )
    # Asked the other way round: the winner still comes first, with the same interval.
    backward = compare_runs(weak, good, n_resamples=500, a_name="baseline", b_name="candidate")
    assert backward.difference.value == pytest.approx(-d.value)
    assert backward.sentence.startswith(
        f"candidate is better than baseline on accuracy by {d.value * 100:.1f} points, 95% CI ["
    )
    assert f"[{d.low * 100:.1f}, {d.high * 100:.1f}]" in backward.sentence


def test_smaller_mse_wins_and_mse_is_resampled_like_its_metric() -> None:
    rng = np.random.default_rng(6)
    labels = rng.uniform(0, 5, 120).astype(np.float32)
    close = scored("close", labels, (labels + rng.normal(0, 0.3, 120)).astype(np.float32))
    far = scored("far", labels, (labels + rng.normal(0, 1.2, 120)).astype(np.float32))

    comparison = compare_runs(close, far, "mse", n_resamples=300)
    mse = metrics.metric_function("mse", task=TaskType.regression, num_labels=1)
    differences = [mse(close.predicted[i], labels[i]) - mse(far.predicted[i], labels[i]) for i in _resampled(120, 300)]
    assert (comparison.difference.low, comparison.difference.high) == pytest.approx(
        tuple(np.percentile(differences, [2.5, 97.5]))
    )
    assert comparison.difference.value < 0 and comparison.significant and comparison.mcnemar is None
    assert comparison.sentence.startswith("close is better than far on mse (lower is better) by ")
    assert compare_runs(close, far, n_resamples=300).metric == "pearson"  # regression's headline metric


def test_runs_on_different_rows_or_tasks_are_refused_with_the_cause() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 50)
    a = classified("run-a", labels, _noisy(labels, 0.8, rng))
    elsewhere = classified("run-b", labels, _noisy(labels, 0.8, rng), digest="rows-2")
    with pytest.raises(ValueError, match="runs run-a and run-b were evaluated on different rows"):
        compare_runs(a, elsewhere)
    shorter = classified("run-c", labels[:40], a.predicted[:40])
    with pytest.raises(ValueError, match="evaluated on different rows .*same dataset, split and max_eval_samples"):
        compare_runs(a, shorter)
    regression = scored("run-d", labels.astype(np.float32), labels.astype(np.float32))
    with pytest.raises(ValueError, match="run run-a is a classification run and run run-d a regression run"):
        compare_runs(a, regression)
    with pytest.raises(ValueError, match="run run-a: classification runs have no metric 'pearson'"):
        compare_runs(a, a, "pearson")


def test_a_seed_summary_is_mean_spread_and_the_t_interval_of_the_mean() -> None:
    values = [0.91, 0.88, 0.93, 0.9]
    summary = summarize_seeds("base", values, "accuracy", seeds=[4, 3, 2, 1])
    mean = sum(values) / 4
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    half = scipy_stats.t.ppf(0.975, 3) * std / math.sqrt(4)
    assert (summary.n, summary.min, summary.max, summary.seeds) == (4, 0.88, 0.93, (4, 3, 2, 1))
    assert summary.mean == pytest.approx(mean) and summary.std == pytest.approx(std)
    assert (summary.mean_interval.low, summary.mean_interval.high) == pytest.approx((mean - half, mean + half))

    single = summarize_seeds("once", [0.9], "accuracy")
    assert single.std is None and single.mean_interval.low is None and single.mean_interval.high is None
    assert "no confidence interval" in single.note
    with pytest.raises(ValueError, match="configuration empty has no runs"):
        summarize_seeds("empty", [], "accuracy")
    with pytest.raises(ValueError, match="configuration base: 2 seeds for 4 values"):
        summarize_seeds("base", values, "accuracy", seeds=[1, 2])


def _all_sign_flips(differences: np.ndarray) -> float:
    result = scipy_stats.permutation_test(
        (differences,),
        lambda x, axis: np.mean(x, axis=axis),
        permutation_type="samples",
        vectorized=True,
        n_resamples=np.inf,
    )
    return float(result.pvalue)


def test_the_sign_flip_test_is_scipys_permutation_test_and_its_interval_inverts_it() -> None:
    rng = np.random.default_rng(8)
    for n in (6, 8, 10):
        d = np.round(rng.normal(0.01, 0.012, n), 3)
        found = sign_flip_test(d)
        assert found.exact and found.p_value == pytest.approx(_all_sign_flips(d))
        # The interval's ends are where scipy's p crosses 0.05: inside, p ≥ 0.05; just outside, below.
        for end, outward in ((found.low, -1e-6), (found.high, 1e-6)):
            assert _all_sign_flips(d - (end - outward)) >= 0.05
            assert _all_sign_flips(d - (end + outward)) < 0.05
    # Beyond the exact range: random sign flips, within their Monte Carlo error of the exact p.
    d = rng.normal(0.004, 0.01, 15)
    assert sign_flip_test(d).p_value == pytest.approx(_all_sign_flips(d), abs=0.01)


def test_configs_with_the_same_recorded_seeds_are_compared_seed_by_seed() -> None:
    a_values = [0.92, 0.915, 0.93, 0.925, 0.94, 0.918]
    b_values = [0.90, 0.905, 0.91, 0.915, 0.92, 0.917]
    a = summarize_seeds("large", a_values, "accuracy", seeds=range(6))
    b = summarize_seeds("small", b_values[::-1], "accuracy", seeds=range(5, -1, -1))  # given in another order
    comparison = compare_configs(a, b)
    differences = np.array(a_values) - np.array(b_values)
    assert comparison.paired_by == "seed" and comparison.differences == pytest.approx(tuple(differences))
    assert comparison.difference.value == pytest.approx(differences.mean())
    # Every difference positive: the exact two-sided sign-flip p is 2 / 2**6.
    assert comparison.p_value == pytest.approx(2 / 64) and comparison.significant and comparison.note is None
    assert comparison.prob_a_beats_b == 1.0
    assert comparison.sentence.startswith("large is better than small on accuracy by ")
    assert "(mean over 6 seeds, exact sign-flip permutation test, 6 seed pairs)" in comparison.sentence


def test_seeds_are_paired_only_by_their_recorded_seed_never_by_order() -> None:
    """8 against 8 values: without recorded seeds the order they are given in changes nothing."""
    rng = np.random.default_rng(9)
    a_values, b_values = rng.normal(0.9, 0.01, 8), rng.normal(0.9, 0.01, 8)
    found = [
        compare_configs(summarize_seeds("a", order_a, "accuracy"), summarize_seeds("b", b_values, "accuracy")).p_value
        for order_a in (a_values, a_values[::-1], np.sort(a_values))
    ]
    assert max(found) == pytest.approx(min(found), rel=1e-12)
    unpaired = compare_configs(summarize_seeds("a", a_values, "accuracy"), summarize_seeds("b", b_values, "accuracy"))
    welch = scipy_stats.ttest_ind(a_values, b_values, equal_var=False)
    assert unpaired.paired_by == "unpaired" and unpaired.p_value == pytest.approx(welch.pvalue)
    # Welch by hand: the interval of the difference of means with Satterthwaite's degrees of freedom.
    va, vb = a_values.var(ddof=1) / 8, b_values.var(ddof=1) / 8
    df = (va + vb) ** 2 / (va**2 / 7 + vb**2 / 7)
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    gap = a_values.mean() - b_values.mean()
    assert (unpaired.difference.low, unpaired.difference.high) == pytest.approx((gap - half, gap + half))
    # Bouthillier et al.'s probability of outperforming: the share of all seed pairs where A's run is better.
    wins = np.mean([(x > y) + 0.5 * (x == y) for x in a_values for y in b_values])
    assert unpaired.prob_a_beats_b == pytest.approx(wins)
    # Different seeds on the two sides: unpaired too.
    shifted = compare_configs(
        summarize_seeds("a", a_values, "accuracy", seeds=range(8)),
        summarize_seeds("b", b_values, "accuracy", seeds=range(1, 9)),
    )
    assert shifted.paired_by == "unpaired" and shifted.p_value == pytest.approx(welch.pvalue)


def test_identical_differences_never_give_p_zero() -> None:
    """Two seeds, each better by one row of 200: no p-value of zero, and no claim."""
    a = summarize_seeds("a", [0.905, 0.915], "accuracy", seeds=[1, 2])
    b = summarize_seeds("b", [0.900, 0.910], "accuracy", seeds=[1, 2])
    comparison = compare_configs(a, b)
    assert not comparison.significant and comparison.p_value != 0.0 and "p < 0.001" not in comparison.sentence
    assert (
        "the exact paired test cannot reach p < 0.05 with 2 seed pairs that differ (it needs 6)" in comparison.sentence
    )
    same = compare_configs(a, summarize_seeds("copy", a.values, "accuracy", seeds=[1, 2]))
    assert same.p_value is None and same.sentence.startswith(
        "cannot tell whether a or copy is better on accuracy: identical results on all 2 seeds"
    )


def test_configs_no_test_can_compare_say_so_instead_of_a_p_value() -> None:
    once = compare_configs(summarize_seeds("x", [0.9], "accuracy"), summarize_seeds("y", [0.8, 0.82], "accuracy"))
    assert once.p_value is None and once.difference.low is None and not once.significant
    assert once.sentence.startswith(
        "cannot tell whether x or y is better on accuracy: x has one seed: no spread to test against"
    )
    assert "no p-value" in once.sentence
    flat = compare_configs(summarize_seeds("x", [0.9, 0.9], "accuracy"), summarize_seeds("y", [0.8, 0.8], "accuracy"))
    assert flat.p_value is None and "every seed gave the same value on each side" in flat.sentence


def test_holm_adjusts_by_the_hypotheses_left() -> None:
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([]) == []


def test_the_best_config_and_those_significantly_worse_over_all_pairs_are_marked() -> None:
    best = summarize_seeds("best", [0.93, 0.94, 0.935, 0.945], "accuracy")
    close = summarize_seeds("close", [0.925, 0.945, 0.93, 0.94], "accuracy")
    poor = summarize_seeds("poor", [0.85, 0.86, 0.855, 0.84], "accuracy")
    once = summarize_seeds("once", [0.92], "accuracy")
    marks = {mark.name: mark for mark in mark_best([poor, close, best, once])}
    assert [m.status for m in marks.values()] == ["significantly worse", "not significantly worse", "best", "untested"]
    # Three testable pairs, Holm-adjusted; poor's clearest better configuration is the one with the smaller p.
    raw = {
        pair: scipy_stats.ttest_ind(x.values, y.values, equal_var=False).pvalue
        for pair, (x, y) in {
            ("poor", "close"): (poor, close),
            ("poor", "best"): (poor, best),
            ("close", "best"): (close, best),
        }.items()
    }
    adjusted = dict(zip(raw, holm(list(raw.values())), strict=True))
    clearest = min(("close", "best"), key=lambda name: adjusted[("poor", name)])
    assert marks["poor"].p_value == pytest.approx(adjusted[("poor", clearest)]) and marks["poor"].against == clearest
    assert marks["close"].p_value == pytest.approx(adjusted[("close", "best")]) and marks["close"].against == "best"

    # Smaller is better for mse.
    low_mse = summarize_seeds("low", [0.2, 0.21, 0.19], "mse")
    high_mse = summarize_seeds("high", [0.5, 0.52, 0.49], "mse")
    assert [m.status for m in mark_best([high_mse, low_mse])] == ["significantly worse", "best"]


def _bernoulli_runs(correct: np.ndarray) -> list[Predictions]:
    labels = np.ones(correct.shape[1], dtype=np.int64)
    return [classified(f"s{i}", labels, row.astype(np.int64)) for i, row in enumerate(correct)]


def test_the_configuration_interval_adds_the_variance_the_seeds_share_over_examples() -> None:
    rng = np.random.default_rng(10)
    correct = rng.random((4, 150)) < np.clip(0.8 + rng.normal(0, 0.15, 150), 0, 1)  # rows of shared difficulty
    found = config_interval(_bernoulli_runs(correct), "accuracy")
    values = correct.mean(axis=1)
    k, n = correct.shape
    # The ideal bootstrap covariances of the seeds' accuracies: the rows' (co)variances over n. The variance one
    # seed has alone is its own row-level noise; what two seeds share is the evaluation set's.
    pairs = [(i, j) for i in range(k) for j in range(k)]
    covariance = {(i, j): np.mean((correct[i] - values[i]) * (correct[j] - values[j])) / n for i, j in pairs}
    shared = np.mean([covariance[i, j] for i, j in pairs if i != j])
    own = np.mean([covariance[i, i] for i in range(k)]) - shared
    seed_effect = max(values.var(ddof=1) - own, 0.0) / k
    from_rows = own / k + shared
    total = seed_effect + from_rows
    df = total**2 / (seed_effect**2 / (k - 1) + from_rows**2 / (n - 1))
    half = scipy_stats.t.ppf(0.975, df) * math.sqrt(total)
    assert found.value == pytest.approx(values.mean())
    assert (found.low, found.high) == pytest.approx((values.mean() - half, values.mean() + half))
    # Wider than the seeds-only t-interval, which ignores that a new evaluation set moves every seed together.
    seeds_only = summarize_seeds("c", values, "accuracy").mean_interval
    assert found.high - found.low > seeds_only.high - seeds_only.low
    assert config_interval(_bernoulli_runs(correct[:1]), "accuracy").low is None


def test_a_run_that_predicts_one_class_is_flagged_with_what_to_change() -> None:
    labels = np.array([0, 1, 1, 0, 1, 1, 1, 0])
    flag = constant_prediction(classified("flat", labels, np.ones(8, dtype=np.int64)))
    assert flag is not None and flag.startswith(
        "run flat predicts class '1' for all 8 rows of validation: its accuracy (0.625)"
    )
    assert "train longer" in flag and "learning-rate" in flag
    assert constant_prediction(classified("fine", labels, labels.copy())) is None
    flat = scored("flat-score", labels.astype(np.float32), np.full(8, 0.5, dtype=np.float32))
    assert "predicts the same score (0.5)" in (constant_prediction(flat) or "")


def test_the_seed_plan_is_the_fewest_seeds_with_the_power_asked_for() -> None:
    plan = plan_seeds(gap=0.01, std=0.01)
    assert plan.seeds is not None and plan.achieved_power >= 0.8 > power_of(plan.seeds - 1, gap=0.01, std=0.01)
    # Power by hand: the noncentral t with 2n − 2 degrees of freedom and noncentrality gap / (std·sqrt(2/n)).
    n = plan.seeds
    ncp, df = 0.01 / (0.01 * math.sqrt(2 / n)), 2 * n - 2
    critical = scipy_stats.t.ppf(0.975, df)
    assert plan.achieved_power == pytest.approx(
        scipy_stats.nct.sf(critical, df, ncp) + scipy_stats.nct.cdf(-critical, df, ncp)
    )
    measured = plan_seeds(gap=0.01, std=0.01, observed_seeds=3)
    assert measured.std_upper == pytest.approx(0.01 * math.sqrt(2 / scipy_stats.chi2.ppf(0.2, 2)))
    assert measured.seeds_at_upper > measured.seeds
    assert plan_seeds(gap=0.001, std=0.05).seeds is None  # more than a spec's 100 seeds
    with pytest.raises(ValueError, match="a seed standard deviation needs 2 or more seeds; got 1"):
        plan_seeds(gap=0.01, std=0.01, observed_seeds=1)
