"""How many seeds a configuration needs: the power of Welch's test (the unpaired comparison `compare_configs`
makes) to detect a gap between two configurations, from the seed-to-seed standard deviation.

Equal seeds on both sides and the same standard deviation; the power is that of the two-sample t-test, from
the noncentral t distribution (scipy.stats.nct), which Welch's test matches with equal sizes and variances.
A standard deviation estimated from few seeds is itself uncertain, so the plan also gives the seeds needed at
its one-sided 80% upper confidence bound (chi-square), the figure to use when the estimate rests on 2-4 seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

__all__ = ["MAX_SEEDS", "SeedPlan", "plan_seeds", "power_of"]

MAX_SEEDS = 100  # the most seeds a run spec expands into


@dataclass(frozen=True)
class SeedPlan:
    """Seeds per configuration to detect `gap` with `power` at two-sided `alpha`; None: more than MAX_SEEDS."""

    gap: float
    std: float
    seeds: int | None
    achieved_power: float | None
    power: float
    alpha: float
    # From a standard deviation measured over `observed_seeds` runs: its 80% upper bound and the seeds it needs.
    observed_seeds: int | None = None
    std_upper: float | None = None
    seeds_at_upper: int | None = None


def power_of(seeds: int, *, gap: float, std: float, alpha: float = 0.05) -> float:
    """The chance that a two-sided two-sample t-test with `seeds` runs a side finds a true gap of `gap`."""
    if seeds < 2:
        return 0.0
    if std == 0:
        return 1.0
    df = 2 * seeds - 2
    noncentrality = abs(gap) / (std * math.sqrt(2.0 / seeds))
    critical = float(stats.t.ppf(1 - alpha / 2, df))
    return float(stats.nct.sf(critical, df, noncentrality) + stats.nct.cdf(-critical, df, noncentrality))


def plan_seeds(
    *, gap: float, std: float, power: float = 0.8, alpha: float = 0.05, observed_seeds: int | None = None
) -> SeedPlan:
    """The fewest seeds per configuration reaching `power`. ValueError for a gap that is not positive, a
    negative standard deviation, power outside (0, 1), or fewer than 2 observed seeds."""
    if not gap > 0:
        raise ValueError(f"the gap to detect must be positive; got {gap}")
    if not std >= 0:
        raise ValueError(f"the seed standard deviation must be zero or more; got {std}")
    if not 0 < power < 1:
        raise ValueError(f"power must lie between 0 and 1; got {power}")
    if observed_seeds is not None and observed_seeds < 2:
        raise ValueError(f"a seed standard deviation needs 2 or more seeds; got {observed_seeds}")
    seeds, achieved = _fewest(gap, std, power, alpha)
    std_upper = seeds_at_upper = None
    if observed_seeds is not None:
        df = observed_seeds - 1
        std_upper = std * math.sqrt(df / float(stats.chi2.ppf(0.2, df)))
        seeds_at_upper = _fewest(gap, std_upper, power, alpha)[0]
    return SeedPlan(
        gap=gap,
        std=std,
        seeds=seeds,
        achieved_power=achieved,
        power=power,
        alpha=alpha,
        observed_seeds=observed_seeds,
        std_upper=std_upper,
        seeds_at_upper=seeds_at_upper,
    )


def _fewest(gap: float, std: float, power: float, alpha: float) -> tuple[int | None, float | None]:
    for seeds in range(2, MAX_SEEDS + 1):
        achieved = power_of(seeds, gap=gap, std=std, alpha=alpha)
        if achieved >= power:
            return seeds, achieved
    return None, None
