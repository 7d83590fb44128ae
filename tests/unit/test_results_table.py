"""The results table shows the class set each run trained on, so a stray label class is visible."""

from __future__ import annotations

import pytest

from bert_eval.cli import _print_results
from bert_eval.core.records import DatasetSchema, TrainingSummary
from bert_eval.spec import TaskType
from bert_eval.temporal.payloads import ExperimentResult, RunResult


def test_the_class_set_is_printed_with_the_results(capsys: pytest.CaptureFixture[str]) -> None:
    summary = TrainingSummary(
        run_id="r1",
        model="m",
        final_loss=0.5,
        steps=10,
        epochs=1.0,
        checkpoints_saved=1,
        resumes=0,
        wall_time_s=1.0,
        train_samples=100,
        model_dir="/x",
        snapshot_id="s",
        dataset_schema=DatasetSchema(
            text_columns=("sentence",), label_column="label", task=TaskType.classification, label_names=("neg", "pos")
        ),
    )
    result = ExperimentResult(
        experiment_id="e",
        runs=[RunResult(run_id="r1", status="completed", training=summary, metrics={"accuracy": 0.9})],
    )
    _print_results(result)
    out = capsys.readouterr().out
    assert "classes" in out and "neg,pos" in out


def test_a_run_evaluated_again_says_why_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from bert_eval.cli import _result_line

    why = "its kept predictions /runs/r2/predictions-validation.parquet were missing"
    runs = [
        RunResult(run_id="r1", status="completed", reused=True, metrics={"accuracy": 0.9}),
        RunResult(run_id="r2", status="completed", metrics={"accuracy": 0.8}, evaluated_again=why),
    ]
    _print_results(ExperimentResult(experiment_id="e", runs=runs))
    out = capsys.readouterr().out
    assert f"repaired: run r2: {why}; evaluated again\n" in out and "repaired: run r1" not in out
    assert "(evaluated again)" in out
    assert _result_line(runs[1]) == f"run r2: completed, accuracy=0.8000, {why}: evaluated again"
    # Results written before the field existed still parse: it defaults to None.
    assert RunResult.model_validate({"run_id": "r3", "status": "completed"}).evaluated_again is None
