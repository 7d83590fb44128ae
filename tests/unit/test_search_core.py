"""The search's core pieces without Temporal: the held-out slice, pausing at a rung and resuming from it,
rung results, and the ASHA ladder's timing-independent decisions."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file
from support.core import core_snapshot
from support.specs import core_spec

from bert_eval.core.data.snapshot import SEARCH_TABLE, read_split
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.search.asha import Job, Ladder, TrialState
from bert_eval.core.search.rungs import evaluate_rung, keep_last_checkpoint, load_rung
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.spec import Holdout


def _trial(model_dir: Path, run_id: str = "trial", **train: object):
    spec = core_spec(model_dir, run_id, **{"epochs": 2, **train})
    return spec.model_copy(update={"holdout": Holdout(fraction=0.25, seed=7)})


def test_the_search_slice_is_carved_from_the_training_rows(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _trial(tiny_model_dir)
    plain = core_snapshot(spec.model_copy(update={"holdout": None}), runs_dir, data_dir)
    snapshot = core_snapshot(spec, runs_dir, data_dir)
    selected = plain.splits["train"]
    assert snapshot.splits[SEARCH_TABLE] == round(selected * 0.25)
    assert snapshot.splits["train"] + snapshot.splits[SEARCH_TABLE] == selected
    assert snapshot.snapshot_id != plain.snapshot_id
    train, held = read_split(snapshot, "train"), read_split(snapshot, SEARCH_TABLE)
    assert not set(train["text"]) & set(held["text"])
    assert set(train["text"]) | set(held["text"]) == set(read_split(plain, "train")["text"])
    # The same seed carves the same slice; the holdout is part of the run's fingerprint.
    assert core_snapshot(spec, runs_dir, data_dir).snapshot_id == snapshot.snapshot_id
    assert spec.fingerprint() != spec.model_copy(update={"holdout": None}).fingerprint()


def test_too_few_rows_for_a_search_slice_is_refused(runs_dir: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    spec = _trial(tiny_model_dir, max_train_samples=30)
    with pytest.raises(InvalidInputError, match=r"run trial: .* 30 selected rows: too few to hold out a search slice"):
        core_snapshot(spec, runs_dir, data_dir)


def test_a_trial_paused_at_a_rung_and_resumed_equals_one_trained_straight_through(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _trial(tiny_model_dir)
    straight_dir, rungs_dir = tmp_path / "straight", tmp_path / "rungs"
    straight = fine_tune(
        FineTuneRequest(run=spec, snapshot=core_snapshot(spec, straight_dir, data_dir), runs_dir=straight_dir)
    )

    snapshot = core_snapshot(spec, rungs_dir, data_dir)
    paused = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=rungs_dir, stop_at_step=4))
    assert paused.steps == 4 and paused.rung_checkpoint is not None and paused.rung_checkpoint.endswith("checkpoint-4")
    assert not Path(straight.model_dir.replace(str(straight_dir), str(rungs_dir))).exists()  # no final model yet
    again = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=rungs_dir, stop_at_step=4, attempt=2))
    assert (again.rung_checkpoint, again.call_seconds) == (paused.rung_checkpoint, 0.0)  # already there: no training

    rung = evaluate_rung(spec, 4, model_dir=paused.model_dir, snapshot=snapshot, runs_dir=rungs_dir)
    assert rung.examples == snapshot.splits[SEARCH_TABLE] and 0.0 <= rung.metrics["accuracy"] <= 1.0
    # What ranks ties and flags an uninformative search, and the per-row outputs behind them.
    assert rung.loss is not None and rung.loss > 0 and rung.predicted_classes in (1, 2)
    assert rung.constant["accuracy"] >= 0.5 and rung.constant["mcc"] == 0.0
    rows = np.load(rungs_dir / "runs" / spec.id / "rungs" / "step-4.npz")
    assert rows["logits"].shape == (rung.examples, 2) and len(rows["labels"]) == rung.examples
    assert load_rung(spec, 4, snapshot=snapshot, runs_dir=rungs_dir) == rung.model_copy(update={"reused": True})
    assert load_rung(spec, 12, snapshot=snapshot, runs_dir=rungs_dir) is None

    later = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=rungs_dir, stop_at_step=12))
    finished = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=rungs_dir))
    assert later.steps == 12 and finished.rung_checkpoint is None and finished.steps == straight.steps
    assert finished.resumed_from_steps == (4, 12) and finished.final_loss == straight.final_loss
    a = load_file(str(Path(straight.model_dir) / "model.safetensors"))
    b = load_file(str(Path(finished.model_dir) / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
    # The same rung of the straight run's weights measures the same: evaluation depends on the weights alone.
    final = evaluate_rung(
        spec, straight.steps, model_dir=straight.model_dir, snapshot=snapshot, runs_dir=tmp_path / "other"
    )
    assert (
        final.metrics
        == evaluate_rung(
            spec, finished.steps, model_dir=finished.model_dir, snapshot=snapshot, runs_dir=rungs_dir
        ).metrics
    )


def test_a_stopped_trial_keeps_only_its_last_checkpoint(runs_dir: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    spec = _trial(tiny_model_dir, checkpoint_every_steps=2, keep_checkpoints=3)
    snapshot = core_snapshot(spec, runs_dir, data_dir)
    fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, stop_at_step=6))
    checkpoints = runs_dir / "runs" / spec.id / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    keep_last_checkpoint(spec.id, runs_dir=runs_dir)
    assert [p.name for p in checkpoints.glob("checkpoint-*")] == ["checkpoint-6"]


def _run_ladder(
    objectives: dict[tuple[int, int], float], arrival_seed: int | None, *, trials: int = 9, concurrent: int = 3
) -> Ladder:
    """Drive a ladder with rungs (1, 3, 9): results arrive in trial order, or shuffled among those in flight."""
    ladder = Ladder(trials_wanted=trials, max_concurrent=concurrent, reduction_factor=3, maximize=True)
    rng = random.Random(arrival_seed)
    in_flight: list[Job] = []
    while not ladder.finished():
        while len(in_flight) < concurrent:
            if (job := ladder.next_promotion()) is None and ladder.can_sample():
                job = ladder.add_trial(f"t{len(ladder.trials)}", {"x": len(ladder.trials)}, (1, 3, 9))
            if job is None:
                break
            in_flight.append(job)
        assert in_flight, "the ladder stalled"
        done = in_flight.pop(rng.randrange(len(in_flight)) if arrival_seed is not None else 0)
        ladder.record(done, objectives[(done.trial, done.rung)])
    ladder.stop_paused()
    return ladder


def test_asha_decisions_do_not_depend_on_the_order_results_arrive_in() -> None:
    rng = random.Random(3)
    objectives = {(t, r): rng.random() + r for t in range(9) for r in range(3)}
    baseline = _run_ladder(objectives, None)
    for seed in range(20):
        shuffled = _run_ladder(objectives, seed)
        assert shuffled.promotions == baseline.promotions
        assert [t.objectives for t in shuffled.trials] == [t.objectives for t in baseline.trials]
        assert [t.state for t in shuffled.trials] == [t.state for t in baseline.trials]
    # 9 trials, η = 3: three reach rung 1, one of those reaches the full budget; the rest are stopped.
    assert [len(t.objectives) for t in baseline.trials].count(3) == 1
    assert [len(t.objectives) for t in baseline.trials].count(2) == 2
    assert sum(t.state is TrialState.stopped for t in baseline.trials) == 8
    best = baseline.best()
    assert best is not None and best.state is TrialState.completed


def test_a_larger_ladder_reports_the_same_promotions_whatever_the_arrival_order() -> None:
    """27 trials, 4 in flight: rungs 1 and 2 decide while rung 0 still takes results, so the order in which
    the rungs' decisions interleave depends on arrival; the reported promotions must not."""
    rng = random.Random(5)
    objectives = {(t, r): rng.random() + r for t in range(27) for r in range(3)}
    baseline = _run_ladder(objectives, None, trials=27, concurrent=4)
    assert [p.split(":")[1] for p in baseline.promotions] == sorted(p.split(":")[1] for p in baseline.promotions)
    for seed in range(50):
        shuffled = _run_ladder(objectives, seed, trials=27, concurrent=4)
        assert shuffled.promotions == baseline.promotions, seed
        assert [(t.objectives, t.state) for t in shuffled.trials] == [
            (t.objectives, t.state) for t in baseline.trials
        ], seed
