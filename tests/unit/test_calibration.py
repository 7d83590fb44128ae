"""Calibration of every test and interval by simulation with a known truth (no training): at α = 0.05, each
test's false-positive rate is not significantly above 5%, and each 95% interval's coverage not significantly
below 95%, judged by the simulated rate's 99.9% Clopper-Pearson interval (so a calibrated statistic fails a
check about once in a thousand, and one a few points off fails with these repetitions). Exact and
conservative methods may sit below 5% / above 95%; the table (`pytest -s`) shows by how much.

Sizes are those users run: 2/5/10/20 configurations, 2-20 seeds, 60-5,000 evaluation rows. The arithmetic of
each statistic is checked against independent computations in test_stats.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from support.predictions import classified, scored

from bert_eval.core.statistics.comparisons import (
    ConfigComparison,
    compare_configs,
    compare_runs,
    mark_best,
    metric_interval,
    summarize_seeds,
)
from bert_eval.core.statistics.configs import config_interval
from bert_eval.core.statistics.mcnemar import paired_accuracy
from bert_eval.core.statistics.power import plan_seeds

ALPHA = 0.05
ROWS_OF_SST2 = 872  # accuracies over seeds are multiples of 1/872: ties, as in real results


def _check(statistic: str, size: str, hits: int, reps: int, *, nominal: float, kind: str) -> None:
    """Assert the simulated rate is within Monte Carlo error of nominal on the side that matters; print a row."""
    low, high = stats.binomtest(hits, reps).proportion_ci(0.999, method="exact")
    rate = hits / reps
    print(
        f"\n| {statistic} | {size} | {kind} {rate:.3f} ({hits}/{reps}) "
        f"| 99.9% [{low:.3f}, {high:.3f}] | nominal {nominal} |"
    )
    if kind == "false positives":
        assert low <= nominal, (
            f"{statistic}, {size}: false-positive rate {rate:.3f}, 99.9% interval [{low:.3f}, {high:.3f}]"
        )
    else:
        assert high >= nominal, f"{statistic}, {size}: coverage {rate:.3f}, 99.9% interval [{low:.3f}, {high:.3f}]"


def _covers(low: float | None, high: float | None, truth: float) -> bool:
    return (low is None or low <= truth) and (high is None or truth <= high)


# --------------------------------------------------------------------------- two runs on the same rows


@pytest.mark.parametrize("rows", [60, 872, 5000])
def test_mcnemar_and_tangos_interval_for_accuracy(rows: int) -> None:
    """Two classifiers that disagree on 12% of rows: equally accurate (false positives), and 4 points apart
    (coverage of the interval of the accuracy difference)."""
    rng = np.random.default_rng(rows)
    reps = 400

    def simulate(a_only: float, b_only: float) -> list[tuple[bool, bool]]:
        cells = rng.multinomial(rows, [a_only, b_only, 1 - a_only - b_only], size=reps)
        found = []
        for a_count, b_count, _ in cells:
            a_correct = np.arange(rows) < a_count
            b_correct = (np.arange(rows) >= a_count) & (np.arange(rows) < a_count + b_count)
            result = paired_accuracy(a_correct, b_correct)
            significant = result.p_value is not None and result.p_value < ALPHA
            found.append((significant, result.low <= a_only - b_only <= result.high))
        return found

    null = simulate(0.06, 0.06)
    _check("McNemar (accuracy)", f"{rows} rows", sum(s for s, _ in null), reps, nominal=ALPHA, kind="false positives")
    gap = simulate(0.08, 0.04)
    _check(
        "Tango interval (accuracy difference)",
        f"{rows} rows",
        sum(c for _, c in gap),
        reps,
        nominal=0.95,
        kind="coverage",
    )


@pytest.mark.parametrize("rows", [60, 500])
def test_the_paired_bootstrap_for_other_metrics(rows: int) -> None:
    """Regression runs scored by mse: equal noise (false positives), and noise 0.5 against 0.6 (coverage of the
    mse difference 0.25 − 0.36)."""
    rng = np.random.default_rng(rows + 1)
    reps = 250
    false_positives = covered = 0
    for _ in range(reps):
        labels = rng.uniform(0, 5, rows)
        same = compare_runs(
            scored("a", labels, labels + rng.normal(0, 0.5, rows)),
            scored("b", labels, labels + rng.normal(0, 0.5, rows)),
            "mse",
            n_resamples=400,
        )
        false_positives += same.significant
        apart = compare_runs(
            scored("a", labels, labels + rng.normal(0, 0.5, rows)),
            scored("b", labels, labels + rng.normal(0, 0.6, rows)),
            "mse",
            n_resamples=400,
        )
        covered += _covers(apart.difference.low, apart.difference.high, 0.25 - 0.36)
    _check("paired bootstrap (mse)", f"{rows} rows", false_positives, reps, nominal=ALPHA, kind="false positives")
    _check("paired bootstrap interval (mse difference)", f"{rows} rows", covered, reps, nominal=0.95, kind="coverage")


@pytest.mark.parametrize("rows", [60, 500])
def test_a_runs_bootstrap_interval(rows: int) -> None:
    """A classifier right on each row with probability 0.85: its accuracy interval covers 0.85."""
    rng = np.random.default_rng(rows + 2)
    reps = 250
    covered = 0
    for _ in range(reps):
        labels = rng.integers(0, 2, rows)
        predicted = np.where(rng.random(rows) < 0.85, labels, 1 - labels)
        found = metric_interval(classified("run", labels, predicted), "accuracy", n_resamples=400)
        covered += _covers(found.low, found.high, 0.85)
    _check("run bootstrap interval (accuracy)", f"{rows} rows", covered, reps, nominal=0.95, kind="coverage")


# --------------------------------------------------------------------------- configurations over seeds


def _seed_scores(
    rng: np.random.Generator, seeds: int, *, gap: float = 0.0, spread: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Two configurations' accuracies on the same seeds: a shared seed effect (data order, head initialization)
    plus each configuration's own noise, rounded to a row of 872 as real accuracies are."""
    shared = rng.normal(0, spread, seeds)
    a = 0.9 + gap + shared + rng.normal(0, spread, seeds)
    b = 0.9 + shared + rng.normal(0, spread, seeds)
    return np.round(a * ROWS_OF_SST2) / ROWS_OF_SST2, np.round(b * ROWS_OF_SST2) / ROWS_OF_SST2


def _compared(a: np.ndarray, b: np.ndarray, *, paired: bool) -> ConfigComparison:
    seeds = list(range(len(a))) if paired else None
    other = list(range(len(b))) if paired else None
    return compare_configs(
        summarize_seeds("a", a, "accuracy", seeds=seeds), summarize_seeds("b", b, "accuracy", seeds=other)
    )


@pytest.mark.parametrize("seeds", [3, 6, 10, 20])
def test_configs_paired_by_seed(seeds: int) -> None:
    """Same seeds on both sides: the exact sign-flip test (from 6 differing pairs; Welch below)."""
    rng = np.random.default_rng(seeds)
    reps = 300 if seeds < 20 else 200
    false_positives = covered = 0
    for _ in range(reps):
        same = _compared(*_seed_scores(rng, seeds), paired=True)
        false_positives += same.significant
        apart = _compared(*_seed_scores(rng, seeds, gap=0.01), paired=True)
        covered += _covers(apart.difference.low, apart.difference.high, 0.01)
    test = "sign-flip test" if seeds >= 6 else "Welch (too few pairs for the sign-flip test)"
    _check(f"{test}, paired", f"{seeds} seeds", false_positives, reps, nominal=ALPHA, kind="false positives")
    _check(f"{test} interval, paired", f"{seeds} seeds", covered, reps, nominal=0.95, kind="coverage")


@pytest.mark.parametrize(("seeds_a", "seeds_b"), [(2, 2), (3, 10), (5, 5), (20, 20)])
def test_configs_with_different_seeds_unpaired(seeds_a: int, seeds_b: int) -> None:
    """Different seeds on each side: Welch's t-test and interval."""
    rng = np.random.default_rng(seeds_a * 100 + seeds_b)
    reps = 250
    false_positives = covered = 0
    for _ in range(reps):
        a, b = rng.normal(0.9, 0.01, seeds_a), rng.normal(0.9, 0.015, seeds_b)
        false_positives += _compared(a, b, paired=False).significant
        apart = _compared(a + 0.01, b, paired=False)
        covered += _covers(apart.difference.low, apart.difference.high, 0.01)
    size = f"{seeds_a} and {seeds_b} seeds"
    _check("Welch's t-test, unpaired", size, false_positives, reps, nominal=ALPHA, kind="false positives")
    _check("Welch interval, unpaired", size, covered, reps, nominal=0.95, kind="coverage")


@pytest.mark.parametrize(("configs", "seeds"), [(2, 5), (5, 5), (10, 5), (20, 5), (10, 2), (5, 20)])
def test_marking_significantly_worse_controls_the_familywise_error(configs: int, seeds: int) -> None:
    """All configurations truly equal: the chance that the table marks any one significantly worse."""
    rng = np.random.default_rng(configs * 100 + seeds)
    reps = 200 if configs <= 10 else 100
    wrong = 0
    for _ in range(reps):
        scores = np.round(rng.normal(0.9, 0.01, (configs, seeds)) * ROWS_OF_SST2) / ROWS_OF_SST2
        marks = mark_best([summarize_seeds(f"c{i}", row, "accuracy") for i, row in enumerate(scores)])
        wrong += any(mark.status == "significantly worse" for mark in marks)
    _check(
        "best marking (Welch, Holm over all pairs)",
        f"{configs} configs x {seeds} seeds",
        wrong,
        reps,
        nominal=ALPHA,
        kind="false positives",
    )


@pytest.mark.parametrize(("seeds", "rows"), [(2, 60), (5, 1000), (10, 5000)])
def test_the_configuration_interval_covers_its_expected_accuracy(seeds: int, rows: int) -> None:
    """Each row has a difficulty z and each seed an effect u; a run is right on a row with probability
    Φ(c + u + λz). Every repetition draws new rows and new seeds; the truth is the accuracy expected over
    both, Φ(c / sqrt(1 + τ² + λ²))."""
    rng = np.random.default_rng(seeds * 7 + rows)
    c, tau, lam = 1.3, 0.06, 0.8
    truth = float(stats.norm.cdf(c / np.sqrt(1 + tau**2 + lam**2)))
    reps = 250 if rows < 5000 else 150
    covered = seeds_only = 0
    labels = np.ones(rows, dtype=np.int64)
    for _ in range(reps):
        probability = stats.norm.cdf(c + rng.normal(0, tau, (seeds, 1)) + lam * rng.normal(0, 1, (1, rows)))
        correct = rng.random((seeds, rows)) < probability
        runs = [classified(f"s{i}", labels, row.astype(np.int64)) for i, row in enumerate(correct)]
        found = config_interval(runs, "accuracy")
        covered += _covers(found.low, found.high, truth)
        t_interval = summarize_seeds("c", correct.mean(axis=1), "accuracy").mean_interval
        seeds_only += _covers(t_interval.low, t_interval.high, truth)
    size = f"{seeds} seeds, {rows} rows"
    print(f"\n| seeds-only t-interval (for contrast, not asserted) | {size} | coverage {seeds_only / reps:.3f} |")
    _check("configuration interval (seeds, then examples)", size, covered, reps, nominal=0.95, kind="coverage")


@pytest.mark.parametrize(("gap", "std"), [(0.01, 0.01), (0.02, 0.01), (0.005, 0.004)])
def test_the_seed_plan_gives_the_power_it_promises(gap: float, std: float) -> None:
    """Welch's test with the planned seeds a side finds the gap in about `power` of simulated experiments."""
    plan = plan_seeds(gap=gap, std=std)
    assert plan.seeds is not None
    rng = np.random.default_rng(int(gap * 1e4))
    reps = 2000
    a = rng.normal(gap, std, (reps, plan.seeds))
    b = rng.normal(0.0, std, (reps, plan.seeds))
    found = int(np.sum(stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < ALPHA))
    low, high = stats.binomtest(found, reps).proportion_ci(0.999, method="exact")
    print(
        f"\n| seed plan power | gap {gap}, std {std}: {plan.seeds} seeds | power {found / reps:.3f} "
        f"| 99.9% [{low:.3f}, {high:.3f}] | planned {plan.achieved_power:.3f} |"
    )
    assert low <= plan.achieved_power <= high
