"""The ML core without Temporal: resume equality, stop-with-checkpoint, refusal to mix runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from support.core import core_snapshot
from support.specs import core_spec

from bert_eval.core.errors import InvalidInputError, TrainingInterrupted
from bert_eval.core.evaluation.batched import evaluate
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.spec import RunSpec


def _spec(model_dir: Path, run_id: str = "core-run", **train: object) -> RunSpec:
    return core_spec(model_dir, run_id, **{"epochs": 2, **train})


_snapshot = core_snapshot


def _weights(summary) -> dict:
    return load_file(str(Path(summary.model_dir) / "model.safetensors"))


def test_interrupted_then_resumed_run_equals_uninterrupted(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _spec(tiny_model_dir)
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight = fine_tune(
        FineTuneRequest(run=spec, snapshot=_snapshot(spec, straight_dir, data_dir), runs_dir=straight_dir)
    )

    snapshot = _snapshot(spec, resumed_dir, data_dir)
    seen = []
    with pytest.raises(TrainingInterrupted) as stopped:
        fine_tune(
            FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=resumed_dir),
            on_progress=lambda p: seen.append(p.step),
            should_stop=lambda: bool(seen) and seen[-1] >= 13,
        )
    assert stopped.value.step == 13 and stopped.value.checkpoint.endswith("checkpoint-13")
    resumed = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=resumed_dir, attempt=2))

    assert (resumed.steps, resumed.resumes, resumed.resumed_from_steps) == (straight.steps, 1, (13,))
    assert resumed.final_loss == straight.final_loss
    a, b = _weights(straight), _weights(resumed)
    assert all((a[k] == b[k]).all() for k in a)
    eval_a = evaluate(
        run_id=spec.id,
        model_dir=straight.model_dir,
        snapshot=snapshot,
        request=spec.primary_eval,
        runs_dir=straight_dir,
    )
    eval_b = evaluate(
        run_id=spec.id, model_dir=resumed.model_dir, snapshot=snapshot, request=spec.primary_eval, runs_dir=resumed_dir
    )
    assert eval_a.metrics == eval_b.metrics
    # Re-running evaluation gives the same numbers.
    assert (
        evaluate(
            run_id=spec.id,
            model_dir=resumed.model_dir,
            snapshot=snapshot,
            request=spec.primary_eval,
            runs_dir=resumed_dir,
        ).metrics
        == eval_b.metrics
    )


def test_completed_training_is_not_redone(runs_dir: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    spec = _spec(tiny_model_dir, epochs=1)
    snapshot = _snapshot(spec, runs_dir, data_dir)
    first = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    steps = []
    again = fine_tune(
        FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir), on_progress=lambda p: steps.append(p.step)
    )
    assert again == first.model_copy(update={"call_seconds": 0.0}) and steps == []
    assert first.call_seconds is not None and first.call_seconds > 0


def test_a_different_spec_never_touches_an_existing_run(runs_dir: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    spec = _spec(tiny_model_dir, epochs=1)
    snapshot = _snapshot(spec, runs_dir, data_dir)
    fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    run_dir = runs_dir / "runs" / spec.id
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
    other = _spec(tiny_model_dir, epochs=1, learning_rate=5e-4)
    with pytest.raises(InvalidInputError, match="core-run.*different model, dataset or hyperparameters"):
        fine_tune(FineTuneRequest(run=other, snapshot=snapshot, runs_dir=runs_dir))
    assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before


def test_checkpoint_from_a_different_model_is_refused(runs_dir: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    spec = _spec(tiny_model_dir)
    snapshot = _snapshot(spec, runs_dir, data_dir)
    seen = []
    with pytest.raises(TrainingInterrupted):
        fine_tune(
            FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir),
            on_progress=lambda p: seen.append(p.step),
            should_stop=lambda: bool(seen) and seen[-1] >= 5,
        )
    # Someone re-points the run at another configuration while keeping its checkpoints.
    other = _spec(tiny_model_dir, seed=99)
    spec_file = runs_dir / "runs" / spec.id / "spec.json"
    spec_file.write_text(json.dumps({"fingerprint": other.fingerprint(), "spec": other.model_dump(mode="json")}))
    with pytest.raises(InvalidInputError, match="written for a different model or configuration"):
        fine_tune(FineTuneRequest(run=other, snapshot=snapshot, runs_dir=runs_dir))


def test_time_based_checkpoints_bound_lost_work_between_step_checkpoints(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    import time

    spec = _spec(
        tiny_model_dir, epochs=1, checkpoint_every_steps=1000, checkpoint_every_seconds=0.3, keep_checkpoints=100
    )
    snapshot = _snapshot(spec, runs_dir, data_dir)

    def slow_step(progress) -> None:
        time.sleep(0.05)  # ~50 ms a step: a save is due every ~6 steps

    summary = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir), on_progress=slow_step)
    steps = [
        json.loads(line)["step"]
        for line in (runs_dir / "runs" / spec.id / "events.jsonl").read_text().splitlines()
        if json.loads(line)["event"] == "checkpoint"
    ]
    # None of these is a multiple of checkpoint_every_steps: all came from the time limit.
    assert len(steps) >= 2 and all(0 < s < summary.steps for s in steps[:-1])
    assert summary.checkpoints_saved == len(steps)


def test_a_run_that_failed_on_bad_input_can_be_resubmitted_fixed(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    good = _spec(tiny_model_dir, epochs=1)
    snapshot = _snapshot(good, runs_dir, data_dir)
    broken = good.model_copy(update={"model": str(runs_dir / "no-such-model")})
    with pytest.raises(InvalidInputError, match="does not exist"):
        fine_tune(FineTuneRequest(run=broken, snapshot=snapshot, runs_dir=runs_dir))
    # The failed run left no results, so the corrected spec may take its run id.
    assert fine_tune(FineTuneRequest(run=good, snapshot=snapshot, runs_dir=runs_dir)).steps == 12


def test_the_trained_model_records_its_training_sequence_length(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    from transformers import AutoTokenizer

    spec = _spec(tiny_model_dir, epochs=1, max_seq_length=32)
    summary = fine_tune(FineTuneRequest(run=spec, snapshot=_snapshot(spec, runs_dir, data_dir), runs_dir=runs_dir))
    # Evaluation reads it from there, so it truncates exactly as training did.
    assert AutoTokenizer.from_pretrained(summary.model_dir).model_max_length == 32
