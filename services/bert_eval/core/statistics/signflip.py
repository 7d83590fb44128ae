"""The sign-flip permutation test of paired differences (Fisher's randomization test on their mean) and the
confidence interval that inverts it, so that the verdict and the interval of a seed-by-seed comparison are one
method: p < α exactly when the (1 − α) interval leaves out zero.

Under no difference, each pair's difference is as likely to have either sign; the p-value is the share of the
2**n sign assignments whose mean is at least as far from zero as the observed one. Up to `EXACT_UP_TO` pairs
all assignments are enumerated (as subset sums, 2**n numbers); beyond, `MONTE_CARLO` random assignments from a
fixed seed (p = (1 + count) / (1 + draws)). scipy's `permutation_test` computes the same p-value (the tests
check it), but enumerates in Python batches, seconds at 16 pairs; the interval needs the assignments' sums,
which it does not return.

The interval: shifting the differences by δ, an assignment s counts towards p(δ) while |Σ s_i (d_i − δ)| ≥
|Σ (d_i − δ)|, a quadratic inequality in δ whose solution is an interval around the mean; the confidence set
{δ : p(δ) ≥ α} is bounded by order statistics of those intervals' ends.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["EXACT_UP_TO", "MONTE_CARLO", "SignFlipTest", "sign_flip_test", "smallest_p"]

EXACT_UP_TO = 14
MONTE_CARLO = 19999
_SEED = 20210301
# Relative tolerance for "at least as far from zero": differences of accuracies repeat exactly, and their
# sums must tie rather than differ in the last bit.
_TIE = 1e-9


@dataclass(frozen=True)
class SignFlipTest:
    """Two-sided sign-flip test of the mean paired difference, and its inverted interval (None: unbounded)."""

    p_value: float
    low: float | None
    high: float | None
    exact: bool
    smallest_p: float  # the smallest p-value any signs of these differences could give


def smallest_p(differences: np.ndarray) -> float:
    """The smallest two-sided p-value the sign-flip test can give for these pairs: 2 / 2**m with m nonzero
    differences (an assignment that only flips zeros ties with the observed one)."""
    nonzero = int(np.count_nonzero(differences))
    return 1.0 if nonzero == 0 else min(1.0, 2.0 / 2.0**nonzero)


def sign_flip_test(differences: np.ndarray, *, confidence: float = 0.95) -> SignFlipTest:
    """The test of mean(differences) = 0 and the interval of the mean shift it does not reject.

    Raises ValueError for fewer than one difference or a non-finite one."""
    d = np.asarray(differences, dtype=float)
    if d.ndim != 1 or len(d) == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"a sign-flip test needs one or more finite paired differences; got {differences!r}")
    n = len(d)
    exact = n <= EXACT_UP_TO
    sums, ones = _assignment_sums(d) if exact else _random_assignment_sums(d)
    extra, total = (0, len(sums)) if exact else (1, len(sums) + 1)
    observed = float(np.sum(d))
    scale = _TIE * max(1.0, float(np.sum(np.abs(d))))
    count = int(np.count_nonzero(np.abs(sums) >= abs(observed) - scale))
    p_value = min(1.0, (extra + count) / total)
    low, high = _inverted_interval(sums, ones, observed, n, alpha=1 - confidence, extra=extra, total=total)
    return SignFlipTest(p_value=p_value, low=low, high=high, exact=exact, smallest_p=smallest_p(d))


def _assignment_sums(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ s_i d_i and Σ s_i over all 2**n sign assignments s (built by doubling, identity first)."""
    sums = np.zeros(1)
    ones = np.zeros(1, dtype=np.int64)
    for value in d:
        sums = np.concatenate([sums + value, sums - value])
        ones = np.concatenate([ones + 1, ones - 1])
    return sums, ones


def _random_assignment_sums(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    signs, ones = _random_signs(len(d))
    return signs @ d, ones


@functools.lru_cache(maxsize=8)
def _random_signs(n: int) -> tuple[np.ndarray, np.ndarray]:
    """MONTE_CARLO random sign assignments of n pairs, the same for every call (fixed seed)."""
    signs = np.random.default_rng(_SEED).integers(0, 2, size=(MONTE_CARLO, n), dtype=np.int8) * 2 - 1
    signs = signs.astype(np.float64)
    signs.setflags(write=False)
    ones = signs.sum(axis=1).astype(np.int64)
    ones.setflags(write=False)
    return signs, ones


def _inverted_interval(
    sums: np.ndarray, ones: np.ndarray, observed: float, n: int, *, alpha: float, extra: int, total: int
) -> tuple[float | None, float | None]:
    """Ends of {δ : p(δ) ≥ alpha}; None where an end is unbounded (too few assignments to exclude any δ)."""
    need = alpha * total - extra  # assignments that must count at δ for p(δ) ≥ alpha
    if need <= 0:
        return None, None
    with np.errstate(divide="ignore", invalid="ignore"):
        # (A_s − δ B_s)² ≥ (A − n δ)²  ⇔  qa δ² + qb δ + qc ≥ 0; qa < 0 unless s = ±1 (always counts).
        qa = ones.astype(float) ** 2 - n**2
        qb = -2.0 * (sums * ones - observed * n)
        qc = sums**2 - observed**2
        root = np.sqrt(np.maximum(qb**2 - 4 * qa * qc, 0.0))
        first, second = (-qb + root) / (2 * qa), (-qb - root) / (2 * qa)
    always = qa == 0
    lows = np.where(always, -np.inf, np.minimum(first, second))
    highs = np.where(always, np.inf, np.maximum(first, second))
    k = math.ceil(need - 1e-9)
    if k > len(sums):
        return observed / n, observed / n
    high = float(np.partition(highs, len(highs) - k)[len(highs) - k])
    low = float(np.partition(lows, k - 1)[k - 1])
    return (None if math.isinf(low) else low), (None if math.isinf(high) else high)
