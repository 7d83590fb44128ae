"""Every evaluation keeps its per-example predictions beside its result, published before it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from support.evaluation import evaluated_run, regression_dataset, saved_head_model
from support.specs import core_spec

from bert_eval.core.data.snapshot import LABEL, eval_table, read_split
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation import batched as evaluation
from bert_eval.core.evaluation.predictions import load_predictions
from bert_eval.core.evaluation.task_metrics import classification_metrics, regression_metrics
from bert_eval.core.storage import fsutil
from bert_eval.core.storage.layout import RunLayout
from bert_eval.spec import RunSpec, TaskType


def test_an_evaluation_keeps_predictions_that_reproduce_its_metrics(
    tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    model = saved_head_model(tiny_model_dir, tmp_path / "classifier", data_dir, seed=1)
    spec = core_spec(tiny_model_dir, "kept")
    result, snapshot = evaluated_run(spec, model, runs_dir, data_dir)
    layout = RunLayout(runs_dir, spec.id)

    predictions = load_predictions(layout, "validation")
    gold = np.asarray(read_split(snapshot, eval_table("validation"))[LABEL])
    assert len(predictions) == result.examples == 64
    assert predictions.task is TaskType.classification and predictions.label_names == ("0", "1")
    np.testing.assert_array_equal(predictions.rows, np.arange(64))
    np.testing.assert_array_equal(predictions.labels, gold)
    assert 0 < predictions.predicted.mean() < 1  # both classes predicted: the rows are not all alike
    np.testing.assert_array_equal(predictions.predicted, np.argmax(predictions.probabilities, axis=1))
    np.testing.assert_allclose(predictions.probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert classification_metrics(predictions.predicted, predictions.labels, num_labels=2) == result.metrics
    assert result.predictions_path == str(layout.predictions_file("validation"))
    # Published under temporary names and renamed: nothing else is left in the run directory.
    assert sorted(p.name for p in layout.root.iterdir()) == ["eval-validation.json", "predictions-validation.parquet"]


def test_a_regression_evaluation_keeps_scores_and_no_probabilities(
    tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    model = saved_head_model(tiny_model_dir, tmp_path / "regressor", data_dir, seed=1, num_labels=1)
    dataset = regression_dataset(data_dir, tmp_path / "scores")
    spec = RunSpec(run_id="scored", model=str(model), dataset={"path": str(dataset)}, eval={"max_eval_samples": 40})
    result, _ = evaluated_run(spec, model, runs_dir, data_dir)

    predictions = load_predictions(RunLayout(runs_dir, "scored"), "validation")
    assert predictions.task is TaskType.regression and predictions.probabilities is None and len(predictions) == 40
    assert predictions.labels.dtype == predictions.predicted.dtype == np.float32
    assert regression_metrics(predictions.predicted, predictions.labels.astype(float)) == result.metrics


def test_a_crash_before_the_result_leaves_predictions_without_a_result_never_the_reverse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    model = saved_head_model(tiny_model_dir, tmp_path / "classifier", data_dir, seed=1)
    spec = core_spec(tiny_model_dir, "crashed")
    layout = RunLayout(runs_dir, spec.id)

    def full_disk(path: Path, payload: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(evaluation, "atomic_write_json", full_disk)
    with pytest.raises(OSError):
        evaluated_run(spec, model, runs_dir, data_dir)
    assert sorted(p.name for p in layout.root.iterdir()) == ["predictions-validation.parquet"]
    with pytest.raises(InvalidInputError, match="run crashed has no evaluation of split 'validation'"):
        load_predictions(layout, "validation")
    monkeypatch.undo()

    # The predictions cannot be renamed into place: neither file appears, and no temporary file stays.
    layout.predictions_file("validation").unlink()

    def refused(source: str, target: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(fsutil.os, "replace", refused)
    with pytest.raises(OSError):
        evaluated_run(spec, model, runs_dir, data_dir)
    assert list(layout.root.iterdir()) == []


def test_replaced_or_missing_predictions_are_refused_with_the_fix(
    tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec_a, spec_b = core_spec(tiny_model_dir, "first"), core_spec(tiny_model_dir, "second")
    evaluated_run(spec_a, saved_head_model(tiny_model_dir, tmp_path / "a", data_dir, seed=1), runs_dir, data_dir)
    evaluated_run(spec_b, saved_head_model(tiny_model_dir, tmp_path / "b", data_dir, seed=2), runs_dir, data_dir)
    first, second = RunLayout(runs_dir, "first"), RunLayout(runs_dir, "second")

    first.predictions_file("validation").write_bytes(second.predictions_file("validation").read_bytes())
    with pytest.raises(
        InvalidInputError, match="run first: predictions-validation.parquet does not match .* evaluate first"
    ):
        load_predictions(first, "validation")

    second.predictions_file("validation").unlink()
    with pytest.raises(InvalidInputError, match="run second: .* is missing"):
        load_predictions(second, "validation")

    # A result written before predictions were kept.
    record = json.loads(second.eval_file("validation").read_text())
    del record["predictions_path"], record["predictions_sha256"]
    second.eval_file("validation").write_text(json.dumps(record))
    with pytest.raises(InvalidInputError, match="before per-example predictions were kept; evaluate second"):
        load_predictions(second, "validation")

    with pytest.raises(
        InvalidInputError, match=r"run first has no evaluation of split 'test' \(it has eval-validation.json\)"
    ):
        load_predictions(first, "test")
