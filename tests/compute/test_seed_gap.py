"""A/B check of the statistics on real fine-tunes (tests/support/seed_runs.py): one epoch that learns against
a learning rate too small to move the weights, 6 seeds each; `compare` must find the gap. The A/A check,
that `compare` names no false winners, is test_seed_noise.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.seed_runs import seed_accuracies

from bert_eval.core.statistics.comparisons import compare_configs, summarize_seeds

pytestmark = [pytest.mark.slow, pytest.mark.compute]


def test_a_real_gap_between_configurations_is_found(tmp_path: Path, data_dir: Path) -> None:
    """One epoch on 320 rows at 3e-4 learns SST-2 (20 steps); a learning rate of 1e-8 leaves the new head where
    it started, so that side trains on 96 rows (its accuracy is its seed's initial head either way)."""
    learns = seed_accuracies(tmp_path, data_dir, "lr-3e-4", range(6), max_train_samples=320, learning_rate=3e-4)
    frozen = seed_accuracies(tmp_path, data_dir, "lr-1e-8", range(6), learning_rate=1e-8)
    compared = compare_configs(
        summarize_seeds("lr-3e-4", learns, "accuracy"), summarize_seeds("lr-1e-8", frozen, "accuracy")
    )
    assert compared.significant, compared.sentence
    assert compared.sentence.startswith("lr-3e-4 is better than lr-1e-8 on accuracy"), compared.sentence
