"""`core/search/asha.py`'s `Ladder`: ASHA's promotion rule (top floor(n/η) of a rung's results, in canonical
order) for both directions, several η, failed rungs, ties, and the leader trained on when a search is too small
for its top rungs."""

from __future__ import annotations

import random

import pytest

from bert_eval.core.search.asha import Job, Ladder, SeenTrial, TrialState


def _ladder(trials: int, *, eta: int = 3, maximize: bool = True, concurrent: int = 1) -> Ladder:
    return Ladder(trials_wanted=trials, max_concurrent=concurrent, reduction_factor=eta, maximize=maximize)


def _drive(
    ladder: Ladder, rungs: tuple[int, ...], value: dict[tuple[int, int], float | None], *, seed: int | None = None
) -> Ladder:
    """Run the ladder to the end: results arrive in start order, or shuffled among those in flight."""
    rng = random.Random(seed)
    in_flight: list[Job] = []
    while not ladder.finished():
        while len(in_flight) < ladder.max_concurrent:
            if (job := ladder.next_promotion()) is None and ladder.can_sample():
                job = ladder.add_trial(f"t{len(ladder.trials)}", {"x": len(ladder.trials)}, rungs)
            if job is None:
                break
            in_flight.append(job)
        assert in_flight, "the ladder stalled"
        done = in_flight.pop(rng.randrange(len(in_flight)) if seed is not None else 0)
        ladder.record(done, value[(done.trial, done.rung)])
    ladder.stop_paused()
    return ladder


def _reached(ladder: Ladder) -> list[int]:
    return [t.rung for t in ladder.trials]


@pytest.mark.parametrize("maximize", [True, False])
def test_the_better_results_are_promoted_whichever_direction_is_better(maximize: bool) -> None:
    """Rung 0 in trial order: 0.3, 0.8, 0.5 (1 goes up: the top third of 3), 0.9 (3 goes up: the top third of 4),
    0.1, 0.6 (the top two of 6 are already up). Rung 1 has two results (none in its top third): the leader,
    trial 3, trains on. Minimizing the negated values decides the same."""
    sign = 1.0 if maximize else -1.0
    rung0 = [0.3, 0.8, 0.5, 0.9, 0.1, 0.6]
    value = {
        **{(t, 0): sign * v for t, v in enumerate(rung0)},
        (1, 1): sign * 0.7,
        (3, 1): sign * 0.85,
        (3, 2): sign * 0.88,
    }
    ladder = _drive(_ladder(6, maximize=maximize), (1, 3, 9), value)
    assert ladder.promotions == ["1:0->1", "3:0->1", "3:1->2"]
    assert _reached(ladder) == [0, 1, 0, 2, 0, 0]
    best = ladder.best()
    assert best is not None and best.index == 3 and best.objective == sign * 0.88


def test_a_minimizing_ladder_promotes_as_soon_as_a_result_ranks_in_the_top_fraction() -> None:
    """Algorithm 2: after 3 results at rung 0 the best of them goes up, before the 4th arrives."""
    ladder = _ladder(9, maximize=False)
    jobs = [ladder.add_trial(f"t{i}", {}, (1, 3, 9)) for i in range(3)]
    for job, loss in zip(jobs, (0.5, 0.2, 0.9), strict=True):
        ladder.record(job, loss)
    assert ladder.next_promotion() == Job(trial=1, rung=1)
    assert ladder.next_promotion() is None


@pytest.mark.parametrize(("eta", "rungs", "counts"), [(2, (1, 2, 4, 8), [4, 2, 1, 1]), (4, (1, 4, 16), [12, 3, 1])])
def test_each_rung_keeps_one_in_eta(eta: int, rungs: tuple[int, ...], counts: list[int]) -> None:
    trials = 8 if eta == 2 else 16
    rng = random.Random(eta)
    value = {(t, r): rng.random() + r for t in range(trials) for r in range(len(rungs))}
    ladder = _drive(_ladder(trials, eta=eta, concurrent=3), rungs, value)
    reached = _reached(ladder)
    # How many trials ended at each rung: floor(n/η) go on from each rung.
    assert [reached.count(r) for r in range(len(rungs))] == counts
    assert sum(t.state is TrialState.completed for t in ladder.trials) == 1
    for seed in range(10):
        assert _drive(_ladder(trials, eta=eta, concurrent=3), rungs, value, seed=seed).promotions == ladder.promotions


def test_a_failed_rung_is_never_promoted_and_does_not_block_the_others() -> None:
    value: dict[tuple[int, int], float | None] = {(t, r): float(t) for t in range(6) for r in range(3)}
    value[(5, 0)] = None  # the best trial fails at its first rung
    ladder = _drive(_ladder(6), (1, 3, 9), value)
    failed = ladder.trials[5]
    assert failed.state is TrialState.failed and failed.objectives == [None]
    # The failure counts among the rung's results, but only measured trials go up: trial 5 would have ranked first.
    assert ladder.promotions == ["2:0->1", "3:0->1", "4:0->1", "4:1->2"]
    best = ladder.best()
    assert best is not None and best.index == 4 and best.state is TrialState.completed


def test_a_rung_where_every_result_failed_promotes_nothing_and_the_search_ends_without_a_winner() -> None:
    value: dict[tuple[int, int], float | None] = {(t, 0): None for t in range(3)}
    ladder = _drive(_ladder(3), (1, 3, 9), value)
    assert ladder.promotions == [] and ladder.best() is None
    assert all(t.state is TrialState.failed for t in ladder.trials)


def test_ties_go_to_the_earlier_trial() -> None:
    value = {(t, r): 0.5 for t in range(9) for r in range(3)}
    ladder = _drive(_ladder(9), (1, 3, 9), value)
    assert ladder.promotions == ["0:0->1", "1:0->1", "2:0->1", "0:1->2"]
    best = ladder.best()
    assert best is not None and best.index == 0


def test_a_search_too_small_for_its_top_rungs_trains_its_leader_on() -> None:
    """Two trials, η = 3: floor(2/3) = 0 promotions, so the rung-0 leader is trained to its full budget."""
    value = {(0, 0): 0.4, (1, 0): 0.7, (1, 1): 0.75, (1, 2): 0.8}
    ladder = _drive(_ladder(2), (1, 3, 9), value)
    assert ladder.promotions == ["1:0->1", "1:1->2"]
    assert [t.state for t in ladder.trials] == [TrialState.stopped, TrialState.completed]
    assert ladder.trials[1].objectives == [0.7, 0.75, 0.8]


def test_the_leader_is_chosen_at_the_highest_rung_reached_not_at_rung_zero() -> None:
    """Four trials, η = 3: trial 0 goes to rung 1 and waits there (1 result, floor(1/3) = 0); the leader trained
    on is trial 0, though trial 3's rung-0 score beats trial 0's rung-1 score."""
    value = {(0, 0): 0.9, (1, 0): 0.1, (2, 0): 0.2, (3, 0): 0.5, (0, 1): 0.3, (0, 2): 0.35}
    ladder = _drive(_ladder(4, maximize=True), (1, 3, 9), value)
    assert ladder.promotions == ["0:0->1", "0:1->2"]
    assert ladder.trials[3].state is TrialState.stopped and ladder.trials[3].rung == 0
    best = ladder.best()
    assert best is not None and best.index == 0


def test_the_minimizing_leader_is_the_lowest() -> None:
    value = {(0, 0): 0.9, (1, 0): 0.1, (1, 1): 0.05, (1, 2): 0.04}
    ladder = _drive(_ladder(2, maximize=False), (1, 3, 9), value)
    assert ladder.promotions == ["1:0->1", "1:1->2"]


def test_no_leader_is_trained_on_when_a_trial_already_completed() -> None:
    value = {(t, r): float(t) for t in range(3) for r in range(3)}
    ladder = _drive(_ladder(3), (1, 3, 9), value)
    # floor(3/3) = 1 promotion per rung: trial 2 completes on its own; no extra promotion happens.
    assert ladder.promotions == ["2:0->1", "2:1->2"]
    assert [t.state for t in ladder.trials] == [TrialState.stopped, TrialState.stopped, TrialState.completed]


def test_without_early_stopping_every_trial_trains_its_single_rung() -> None:
    value = {(t, 0): float(t) for t in range(4)}
    ladder = _drive(_ladder(4, eta=0), (9,), value)
    assert ladder.promotions == [] and all(t.state is TrialState.completed for t in ladder.trials)
    best = ladder.best()
    assert best is not None and best.index == 3


# --- when a new trial may be sampled, and what its sampler sees ---


def _views(
    value: dict[tuple[int, int], float], seed: int | None, *, trials: int, concurrent: int, lag: int, free: int
) -> list[list[SeenTrial]]:
    """Drive a ladder with the lag; record what each trial's sampler saw."""
    ladder = _ladder(trials, concurrent=concurrent)
    ladder.sampling_lag, ladder.free_samples = lag, free
    rng = random.Random(seed)
    views: list[list[SeenTrial]] = []
    in_flight: list[Job] = []
    while not ladder.finished():
        while len(in_flight) < concurrent:
            if (job := ladder.next_promotion()) is None and ladder.can_sample():
                views.append(ladder.sampler_view())
                job = ladder.add_trial(f"t{len(ladder.trials)}", {"x": len(ladder.trials)}, (1, 3, 9))
            if job is None:
                break
            in_flight.append(job)
        assert in_flight, "the ladder stalled"
        done = in_flight.pop(rng.randrange(len(in_flight)) if seed is not None else 0)
        ladder.record(done, value[(done.trial, done.rung)])
    return views


def test_a_sampler_that_ignores_results_never_waits_for_one() -> None:
    ladder = _ladder(5, concurrent=2)
    ladder.sampling_lag, ladder.free_samples = 3, 5
    for i in range(5):
        assert ladder.can_sample()
        ladder.add_trial(f"t{i}", {}, (1, 3, 9))
        assert all(not seen.objectives for seen in ladder.sampler_view())
    assert not ladder.can_sample()  # every trial sampled


def test_after_its_free_trials_a_sampler_waits_for_the_rung_zero_results_lag_trials_back() -> None:
    ladder = _ladder(8, concurrent=2)
    ladder.sampling_lag, ladder.free_samples = 3, 4
    jobs = [ladder.add_trial(f"t{i}", {}, (1, 3, 9)) for i in range(4)]
    assert not ladder.can_sample()  # trial 4 sees trials 0 and 1
    ladder.record(jobs[1], 0.5)
    assert not ladder.can_sample()  # trial 1 arrived first, but trial 0 is processed first
    ladder.record(jobs[0], 0.2)
    assert ladder.can_sample()
    assert [s.objectives for s in ladder.sampler_view()] == [[0.2], [0.5], [], []]


def test_the_original_gate_still_waits_for_trial_i_minus_c() -> None:
    ladder = _ladder(4, concurrent=2)  # sampling_lag None: a ladder made before the lag
    jobs = [ladder.add_trial(f"t{i}", {}, (1, 3, 9)) for i in range(2)]
    assert not ladder.can_sample()
    ladder.record(jobs[0], 0.1)
    assert ladder.can_sample()
    assert ladder.sampler_history()[0][1:] == (0.1, True)


def test_what_each_sampler_sees_includes_higher_rungs_and_does_not_depend_on_arrival_order() -> None:
    rng = random.Random(11)
    value = {(t, r): rng.random() + r for t in range(27) for r in range(3)}
    baseline = _views(value, None, trials=27, concurrent=3, lag=4, free=4)
    assert any(len(seen.objectives) >= 2 for view in baseline for seen in view), "no higher rung was ever seen"
    assert any(seen.completed for view in baseline for seen in view)
    for seed in range(15):
        assert _views(value, seed, trials=27, concurrent=3, lag=4, free=4) == baseline, seed


# --- ties ---


def test_equal_objectives_are_ranked_by_the_slices_loss() -> None:
    """Three trials tie on accuracy at rung 0; the one with the lowest log-loss goes up, not the first."""
    ladder = _ladder(3)
    ladder.loss_ties = True
    jobs = [ladder.add_trial(f"t{i}", {}, (1, 3, 9)) for i in range(3)]
    for job, loss in zip(jobs, (0.69, 0.52, 0.60), strict=True):
        ladder.record(job, 0.5, loss=loss, classes=2)
    assert ladder.next_promotion() == Job(trial=1, rung=1)
    assert ladder.trials[1].losses == [0.52] and ladder.trials[1].classes == [2]


def test_a_ladder_made_before_loss_ties_still_breaks_ties_by_index() -> None:
    ladder = _ladder(3)  # loss_ties False: the ranking a search started before it recorded
    jobs = [ladder.add_trial(f"t{i}", {}, (1, 3, 9)) for i in range(3)]
    for job, loss in zip(jobs, (0.69, 0.52, 0.60), strict=True):
        ladder.record(job, 0.5, loss=loss)
    assert ladder.next_promotion() == Job(trial=0, rung=1)


def test_the_best_of_tied_completed_trials_has_the_lowest_loss() -> None:
    ladder = _ladder(2, eta=0)
    ladder.loss_ties = True
    first, second = (ladder.add_trial(f"t{i}", {}, (9,)) for i in range(2))
    ladder.record(first, 0.8, loss=0.45)
    ladder.record(second, 0.8, loss=0.40)
    best = ladder.best()
    assert best is not None and best.index == 1
