"""The accuracy difference of two classifiers on the same rows: McNemar's test and Tango's score interval.

Tango's asymptotic score interval (Tango 1998) inverts the score test of p_A − p_B = δ for paired proportions;
at δ = 0 that score test is McNemar's test without continuity correction, so the verdict (p < α) and the
interval (leaves out zero) never disagree. Fagerland, Lydersen & Laake (2013, 2014) recommend both: the
asymptotic McNemar test keeps its level closer to nominal than the exact conditional (binomial) test, which is
conservative, and Tango's interval covers near nominal where Wald and bootstrap intervals fall short.

Only the discordant rows matter: `a_only` rows that A gets right and B wrong, `b_only` the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats

__all__ = ["PairedAccuracy", "paired_accuracy", "tango_score"]


@dataclass(frozen=True)
class PairedAccuracy:
    """McNemar's test and Tango's interval for accuracy(A) − accuracy(B); `p_value` None when no outcome with
    this many discordant rows could reach p < α (`testable` False)."""

    a_only: int
    b_only: int
    examples: int
    difference: float
    low: float
    high: float
    statistic: float | None  # McNemar's χ² = (a_only − b_only)² / (a_only + b_only)
    p_value: float | None
    testable: bool


def tango_score(delta: float | np.ndarray, a_only: int, b_only: int, examples: int) -> np.ndarray:
    """Tango's score statistic for p_A − p_B = delta (decreasing in delta; 0 at the observed difference)."""
    delta = np.asarray(delta, dtype=float)
    n, b, c = examples, a_only, b_only
    # The maximum-likelihood P(B right, A wrong) under the constraint, a root of a quadratic (Tango 1998, eq. 3).
    qa = 2.0 * n
    qb = -b - c + (2.0 * n - b + c) * delta
    qc = -c * delta * (1.0 - delta)
    b_only_rate = (np.sqrt(np.maximum(qb**2 - 4 * qa * qc, 0.0)) - qb) / (2 * qa)
    numerator = b - c - n * delta
    variance = n * (2 * b_only_rate + delta * (1 - delta))
    with np.errstate(divide="ignore", invalid="ignore"):
        score = numerator / np.sqrt(variance)
    return np.where(numerator == 0, 0.0, score)


def paired_accuracy(a_correct: np.ndarray, b_correct: np.ndarray, *, confidence: float = 0.95) -> PairedAccuracy:
    """McNemar's test and Tango's interval from two runs' per-row correctness (boolean arrays, same rows)."""
    a_correct, b_correct = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    examples = len(a_correct)
    a_only = int(np.sum(a_correct & ~b_correct))
    b_only = int(np.sum(b_correct & ~a_correct))
    discordant = a_only + b_only
    alpha = 1 - confidence
    critical = float(stats.norm.ppf(1 - alpha / 2))
    difference = (a_only - b_only) / examples

    def bound(target: float, start: float, end: float) -> float:
        def gap(delta: float) -> float:
            return float(tango_score(delta, a_only, b_only, examples)) - target

        if gap(end) * gap(start) > 0:  # never reaches the critical value inside (−1, 1)
            return float(round(end))
        found = float(optimize.brentq(gap, start, end, xtol=1e-12))
        return float(round(found)) if abs(found) >= edge else found

    edge = 1 - 1e-12
    low = bound(critical, -edge, difference)
    high = bound(-critical, difference, edge)
    # The largest χ² these discordant rows allow is `discordant` itself (all on one side).
    testable = discordant > 0 and float(stats.chi2.sf(discordant, 1)) < alpha
    statistic = p_value = None
    if testable:
        statistic = (a_only - b_only) ** 2 / discordant
        p_value = float(stats.chi2.sf(statistic, 1))
    return PairedAccuracy(
        a_only=a_only,
        b_only=b_only,
        examples=examples,
        difference=difference,
        low=low,
        high=high,
        statistic=statistic,
        p_value=p_value,
        testable=testable,
    )
