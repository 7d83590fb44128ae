"""A/A and A/B checks of the statistics on real fine-tunes: the pretrained MiniLM fine-tuned on a small
SST-2 slice with many seeds (the core's own fine_tune and evaluate, no server).

A/A: one configuration under two names, 8 seeds each, 20 different seed sets drawn from one pool of runs.
What a user does today, comparing one run of each, names a winner whenever the two accuracies differ by a
point or more; `compare` (a Wilcoxon test over seeds) must name one in at most 5% of the sets.
A/B: one epoch that learns against a learning rate too small to move the weights: `compare` finds the gap.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from support.specs import core_spec

from bert_eval.core.evaluation import evaluate
from bert_eval.core.stats import compare_configs, summarize_seeds
from bert_eval.core.training import FineTuneRequest, fine_tune

from .core_support import core_snapshot

pytestmark = pytest.mark.slow

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
POOL, PER_SIDE, SETS = 24, 8, 20
ONE_POINT = 0.01


def _accuracies(runs_dir: Path, data_dir: Path, name: str, seeds: range, **train: object) -> list[float]:
    """Each seed also draws its own 96 training rows (shuffle_before_select): data-order and init noise."""
    values = []
    for seed in seeds:
        hyper = dict(seed=seed, max_train_samples=96, max_seq_length=32, learning_rate=1e-4, checkpoint_every_steps=None)
        spec = core_spec(Path(MINILM), f"{name}-s{seed}", **{**hyper, **train}).model_copy(update={"model": MINILM})
        spec = spec.model_copy(update={"eval": spec.eval.model_copy(update={"max_eval_samples": 200})})
        snapshot = core_snapshot(spec, runs_dir, data_dir)
        summary = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
        result = evaluate(run_id=spec.id, model_dir=summary.model_dir, snapshot=snapshot, request=spec.eval, runs_dir=runs_dir)
        values.append(result.metrics["accuracy"])
    return values


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, list[float]]:
    runs_dir = tmp_path_factory.mktemp("seed-noise")
    values = _accuracies(runs_dir, data_dir, "aa", range(POOL))
    assert len(set(values)) > POOL // 3, f"the seeds must move the accuracy for this check to mean anything: {values}"
    return runs_dir, values


def test_seed_noise_names_false_winners_that_compare_does_not(pool: tuple[Path, list[float]], capsys: pytest.CaptureFixture[str]) -> None:
    _, values = pool
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
            f"\nA/A over {SETS} seed sets ({PER_SIDE} seeds a side, pool of {POOL} runs, accuracy {spread}): single-seed "
            f"comparisons named a winner (>= 1 point) in {single_seed_winners}/{SETS}, compare in {compare_winners}/{SETS}"
        )
    assert compare_winners <= 0.05 * SETS
    assert single_seed_winners > compare_winners


def test_a_real_gap_between_configurations_is_found(pool: tuple[Path, list[float]], data_dir: Path) -> None:
    """One epoch on 320 rows at 3e-4 learns SST-2 (20 steps); a learning rate of 1e-8 leaves the new head where
    it started, so that side trains on the pool's 96 rows (its accuracy is its seed's initial head either way)."""
    runs_dir, _ = pool
    learns = _accuracies(runs_dir, data_dir, "lr-3e-4", range(6), max_train_samples=320, learning_rate=3e-4)
    frozen = _accuracies(runs_dir, data_dir, "lr-1e-8", range(6), learning_rate=1e-8)
    compared = compare_configs(summarize_seeds("lr-3e-4", learns, "accuracy"), summarize_seeds("lr-1e-8", frozen, "accuracy"))
    assert compared.significant, compared.sentence
    assert compared.sentence.startswith("lr-3e-4 is better than lr-1e-8 on accuracy"), compared.sentence
