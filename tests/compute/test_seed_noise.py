"""A/A check of the statistics on real fine-tunes (tests/support/seed_runs.py): one configuration under two
names, 8 seeds each, 20 different seed sets drawn from one pool of 24 runs.

Comparing one run of each, as a user without seeds would, names a winner whenever the two accuracies differ by a
point or more; `compare` (Welch's test over seeds: the two sides hold different seeds) must name one in at most
5% of the sets. The A/B check, that `compare` finds a real gap, is test_seed_gap.py.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from support.seed_runs import seed_accuracies

from bert_eval.core.statistics.comparisons import compare_configs, summarize_seeds

pytestmark = [pytest.mark.slow, pytest.mark.compute]

POOL, PER_SIDE, SETS = 24, 8, 20
ONE_POINT = 0.01


def test_seed_noise_names_false_winners_that_compare_does_not(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = seed_accuracies(tmp_path, data_dir, "aa", range(POOL))
    assert len(set(values)) > POOL // 3, f"the seeds must move the accuracy for this check to mean anything: {values}"
    rng = random.Random(0)
    single_seed_winners = compare_winners = 0
    for _ in range(SETS):
        drawn = rng.sample(values, 2 * PER_SIDE)
        a, b = drawn[:PER_SIDE], drawn[PER_SIDE:]
        single_seed_winners += abs(a[0] - b[0]) >= ONE_POINT
        compared = compare_configs(summarize_seeds("a", a, "accuracy"), summarize_seeds("b", b, "accuracy"))
        compare_winners += compared.significant
    with capsys.disabled():
        spread = f"{min(values):.3f}-{max(values):.3f}"
        print(
            f"\nA/A over {SETS} seed sets ({PER_SIDE} seeds a side, pool of {POOL} runs, accuracy {spread}): "
            f"single-seed comparisons named a winner (>= 1 point) in {single_seed_winners}/{SETS}, "
            f"compare in {compare_winners}/{SETS}"
        )
    assert compare_winners <= 0.05 * SETS
    assert single_seed_winners > compare_winners
