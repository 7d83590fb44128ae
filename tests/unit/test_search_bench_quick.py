"""benchmarks/search_bench.py's own logic: the Optuna baseline trains at bert-eval's rungs through the same
calls, and the kill row counts what a kill cost from the journals and the Optuna storage."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from bert_eval.core.storage.journal import RunJournal
from bert_eval.core.storage.layout import RunLayout
from bert_eval.experiment import parse_experiment
from bert_eval.search import holdout_rows, max_steps, rung_steps

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("search_bench", REPO / "benchmarks" / "search_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_bench"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_search_has_the_rungs_and_slice_its_sizes_say(bench) -> None:
    """540 training rows at batch 16: 34 steps, rungs at 4, 12, 34; a 60-row search slice (SEARCH_CPU's comment)."""
    experiment = parse_experiment(bench.search_document(bench.SEARCH_CPU, bench.MINILM, "sizes"))
    sizes, template, search = bench.SEARCH_CPU, experiment.runs[0], experiment.search
    held = holdout_rows(sizes.train_rows, search.objective.holdout)
    assert held == 60
    assert rung_steps(search.scheduler, max_steps(template.train, sizes.train_rows - held)) == (4, 12, 34)
    assert search.max_concurrent == 1 and search.trials == 12


def test_the_optuna_baseline_trains_each_trial_rung_by_rung_at_bert_evals_rungs(
    bench, tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    document = bench.search_document(bench.SEARCH_QUICK, str(tiny_model_dir), "optuna-probe")
    document["search"]["trials"] = 2
    study = bench.optuna_search(document, runs_dir=tmp_path, data_dir=data_dir)
    run = bench.measured_optuna(study, wall_s=1000.0, runs_dir=tmp_path)
    assert len(study.trials) == 2 and run.best is not None and run.final_metrics is not None
    for trial in study.trials:
        # The first trials are never pruned (Optuna promotes the best so far): each trains to its budget
        # in 3 calls, resuming from each rung's checkpoint, and is evaluated at each rung.
        assert list(trial.intermediate_values) == [2, 6, 10]
        events = RunJournal(RunLayout(tmp_path, f"optuna-probe-t{trial.number:04d}").journal_file).read()
        assert [e["from_step"] for e in events if e["event"] == "resume"] == [2, 6]
    assert run.training_calls == 6 and run.train_s > 0 and run.eval_s > 0
    # One call at a time: the time some call was running is about the calls' sum (journal vs in-call clocks).
    assert run.busy_s == pytest.approx(run.train_s + run.eval_s, rel=0.1)


def test_a_killed_trial_counts_all_its_training_and_a_killed_attempt_only_its_own(bench) -> None:
    events = [
        {"event": "attempt", "time": 10.0, "attempt": 1},
        {"event": "checkpoint", "time": 12.0},
        {"event": "paused", "time": 12.5},
        {"event": "attempt", "time": 13.0, "attempt": 1},
        {"event": "resume", "time": 14.0, "attempt": 1, "from_step": 4},
        {"event": "attempt", "time": 30.0, "attempt": 2},  # after the kill: not counted
    ]
    assert bench.training_seconds(events, until=16.0) == pytest.approx(2.5 + 3.0)
    assert bench.seconds_since_last_save(events, at=16.0) == pytest.approx(3.0)


def test_optuna_losses_count_trials_left_running_and_params_sampled_again(bench) -> None:
    study = optuna.create_study(study_name="lost")
    distributions = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    for params, state in (
        ({"x": 0.1}, "COMPLETE"),
        ({"x": 0.2}, "RUNNING"),
        ({"x": 0.1}, "COMPLETE"),
        ({"x": 0.3}, "PRUNED"),
    ):
        trial_state = optuna.trial.TrialState[state]
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions=distributions,
                state=trial_state,
                value=0.5 if state == "COMPLETE" else None,
            )
        )
    losses = bench.optuna_losses(study, None, Path("/nonexistent"), wanted=3)
    assert (losses["trials_lost"], losses["lost_trials"], losses["trials_repeated"], losses["replacement_trials"]) == (
        1,
        [1],
        1,
        1,
    )


def test_the_replay_records_every_rung_and_replays_the_ladder_on_it(
    bench, tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    """Four tiny trials recorded rung by rung (rungs 1, 2, 4): each rung's per-row slice results are kept, ASHA
    and Optuna's pruner replay over subsets, and the replay of every trial in order is what the ladder decides."""
    replay = sys.modules.get("search_replay") or __import__("search_replay")
    sizes = replay.ReplaySizes(
        trials=4,
        subset=3,
        replicates=6,
        train_rows=64,
        slice_rows=40,
        batch_size=16,
        min_steps=1,
        reduction_factor=2,
        epochs=1,
    )
    document = replay.replay_document(sizes, str(tiny_model_dir), "replay-probe")
    document["defaults"]["eval"]["max_eval_samples"] = 32
    curves = replay.record_curves(document, tmp_path, data_dir)
    assert [t.steps for t in curves.trials] == [[1, 2, 4]] * 4
    assert all(len(c) == 40 for t in curves.trials for c in t.correct)
    assert all(0 <= t.validation <= 1 for t in curves.trials)
    assert len(curves.calls) == 12 and all(seconds > 0 for _, seconds in curves.calls)
    # The same curves read back from the runs directory and the raw figures, without training again.
    record = {"calls": curves.calls, "validation": [t.validation for t in curves.trials]}
    again = replay.curves_from_record(tmp_path, record, "replay-probe")
    assert [t.steps for t in again.trials] == [t.steps for t in curves.trials]
    assert again.calls == curves.calls
    for old, new in zip(curves.trials, again.trials, strict=True):
        assert all((a == b).all() for a, b in zip(old.correct, new.correct, strict=True))
        assert all(np.allclose(a, b) for a, b in zip(old.row_loss, new.row_loss, strict=True))
    summary = replay.replay(curves, sizes)
    for side in ("asha", "optuna", "noise"):
        assert summary[side]["regret_ci_pt"][0] <= summary[side]["regret_mean_pt"] <= summary[side]["regret_ci_pt"][1]
        assert 0 < summary[side]["steps_ratio"] <= 1
    # η = 2 over 3 trials: at most two reach the full budget, so ASHA trains fewer steps than the full search.
    assert summary["asha"]["steps_ratio"] < 1


def test_keeping_trials_within_noise_promotes_ties_and_cuts_clear_losers(bench) -> None:
    """The replayed variant promotes a trial below the cut-off only when McNemar's test cannot tell it from the
    cut-off on the slice: equal trials all reach the top rung, a trial wrong on every row stops at rung 0."""
    replay = sys.modules.get("search_replay") or __import__("search_replay")
    rows = 200

    def trial(correct: np.ndarray) -> object:
        return replay.TrialCurve(
            params={}, steps=[1, 3, 9], seconds=[1.0, 1.0, 1.0], correct=[correct] * 3,
            row_loss=[np.where(correct, 0.1, 2.0)] * 3, validation=float(correct.mean()),
        )  # fmt: skip

    right = np.arange(rows) % 2 == 0
    equal = replay.Curves(trials=[trial(right) for _ in range(6)])
    order, all_rows = list(range(6)), np.arange(rows)
    within = replay.asha_on(equal, order, all_rows, 3, within_noise=True)
    plain = replay.asha_on(equal, order, all_rows, 3)
    assert within.steps == 6 * 9  # every trial within noise of the cut-off: all trained to the end
    assert plain.steps < within.steps
    mixed = replay.Curves(trials=[trial(right), trial(right), trial(right), trial(np.zeros(rows, dtype=bool))])
    kept = replay.asha_on(mixed, [0, 1, 2, 3], all_rows, 3, within_noise=True)
    assert "3:0->1" not in kept.promotions
    assert {"1:0->1", "2:0->1"} <= set(kept.promotions)
