"""`core/search/sampling.py`: what Optuna's samplers are told about earlier trials."""

from __future__ import annotations

from bert_eval.core.search.asha import SeenTrial
from bert_eval.core.search.sampling import TPE_STARTUP_TRIALS, free_samples, suggest
from bert_eval.spec import SearchSpec


def _search(sampler: str = "tpe", trials: int = 40) -> SearchSpec:
    return SearchSpec.model_validate(
        {
            "space": {"train.warmup_ratio": {"uniform": [0.0, 0.99]}},
            "sampler": sampler,
            "trials": trials,
            "seed": 1,
            "objective": {"metric": "accuracy", "mode": "max", "holdout": 0.2},
            "scheduler": {"type": "asha", "min_steps": 1, "reduction_factor": 3},
        }
    )


def test_tpe_learns_from_the_highest_rung_each_trial_reached_not_from_its_first() -> None:
    """Trials near 0.9 reached the full budget (scoring 0.6 there); those near 0.1 scored best at rung 0 (0.7)
    and were stopped. Ranked by rung reached, TPE samples near 0.9; ranked by rung-0 score it would go near 0.1."""
    seen = []
    for i in range(30):
        far = i % 3 == 0
        x = 0.9 + 0.002 * i if far else 0.1 + 0.002 * i
        objectives: list[float | None] = [0.5, 0.55, 0.6] if far else [0.7]
        seen.append(SeenTrial(params={"train.warmup_ratio": x}, objectives=objectives, completed=far))
    picks = [suggest(_search(), 30 + k, [], seen)["train.warmup_ratio"] for k in range(8)]
    assert sum(p > 0.5 for p in picks) >= 6, picks
    rung_zero = [(s.params, s.objectives[0], True) for s in seen]
    picks_first_rung = [suggest(_search(), 30 + k, rung_zero)["train.warmup_ratio"] for k in range(8)]
    assert sum(p < 0.5 for p in picks_first_rung) >= 6, picks_first_rung


def test_trials_still_running_or_failed_do_not_count_towards_tpes_start_up() -> None:
    """With fewer finished trials than TPE's start-up count, the draw is the seeded random one, whatever else is
    in the history."""
    unseen = [SeenTrial(params={"train.warmup_ratio": 0.5}) for _ in range(12)]
    failed = [SeenTrial(params={"train.warmup_ratio": 0.5}, objectives=[None]) for _ in range(12)]
    assert suggest(_search(), 12, [], unseen) == suggest(_search(), 12, [], failed) == suggest(_search(), 12, [], [])


def test_samplers_that_ignore_results_are_free_for_every_trial_and_tpe_for_its_start_up() -> None:
    assert free_samples(_search("random", 50), lag=3) == 50
    assert free_samples(_search("tpe", 50), lag=3) == TPE_STARTUP_TRIALS + 2
    assert free_samples(_search("tpe", 6), lag=3) == 6
