"""Eval-only snapshots: one split, labelled with the model's classes, for evaluating a model as given."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from bert_eval.core.data.snapshot import LABEL, TEXT, SnapshotInput, create_snapshot, read_split
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.records import ModelInfo
from bert_eval.spec import DatasetSpec, TaskType


def _model(*labels: str) -> ModelInfo:
    if not labels:
        return ModelInfo(path="/models/scorer", digest="0" * 16, task=TaskType.regression)
    return ModelInfo(path="/models/classifier", digest="0" * 16, task=TaskType.classification, label_names=labels)


def _dataset(root: Path, labels: list[object], *, split: str = "validation") -> DatasetSpec:
    """A local dataset with only the `split` file (no training split)."""
    root.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"sentence": [f"text {i}" for i in range(len(labels))], "label": labels}).to_csv(
        root / f"{split}.csv", index=False
    )
    return DatasetSpec(path=str(root))


def _eval_only(dataset: DatasetSpec, model: ModelInfo, **fields: object) -> SnapshotInput:
    return SnapshotInput.for_model(run_id="judge", dataset=dataset, model=model, **fields)


def test_label_ids_index_the_models_classes(tmp_path: Path, runs_dir: Path) -> None:
    dataset = _dataset(tmp_path / "words", ["pos", "neg", "pos"])
    model = _model("neg", "neutral", "pos")  # a superset of the data's labels, in the model's own order
    snapshot = create_snapshot(_eval_only(dataset, model), runs_dir=runs_dir, data_dir=None)

    assert snapshot.splits == {"validation": 3}  # no training table, and the dataset has no training split
    assert sorted(p.name for p in Path(snapshot.path).iterdir()) == ["manifest.json", "validation.parquet"]
    schema = snapshot.dataset_schema
    assert schema.task is TaskType.classification and schema.label_names == ("neg", "neutral", "pos")
    assert (schema.text_columns, schema.label_column) == (("sentence",), "label")
    rows = read_split(snapshot, "validation")
    assert rows[LABEL] == [2, 0, 2] and rows[TEXT] == ["text 0", "text 1", "text 2"]
    assert json.loads((Path(snapshot.path) / "manifest.json").read_text())["selection"]["train_table"] is False


def test_data_labels_the_model_lacks_are_refused_with_both_label_sets(tmp_path: Path, runs_dir: Path) -> None:
    dataset = _dataset(tmp_path / "three", ["pos", "neutral", "neg"])
    with pytest.raises(InvalidInputError) as refused:
        create_snapshot(_eval_only(dataset, _model("neg", "pos")), runs_dir=runs_dir, data_dir=None)
    message = str(refused.value)
    assert message.startswith("run judge: split 'validation' of dataset")
    assert "has label(s) ['neutral'] that the model does not predict" in message
    assert "the data's labels are ['neg', 'neutral', 'pos'], the model's ['neg', 'pos']" in message
    assert not (runs_dir / "snapshots").exists() or not any((runs_dir / "snapshots").iterdir())


def test_only_the_selected_rows_labels_must_be_the_models(tmp_path: Path, runs_dir: Path) -> None:
    dataset = _dataset(tmp_path / "tail", ["neg", "pos", "neutral"])
    snapshot = create_snapshot(
        _eval_only(dataset, _model("neg", "pos"), max_eval_samples=2), runs_dir=runs_dir, data_dir=None
    )
    assert snapshot.splits == {"validation": 2} and read_split(snapshot, "validation")[LABEL] == [0, 1]


def test_a_task_mismatch_between_model_and_data_is_refused(tmp_path: Path, runs_dir: Path) -> None:
    classes = _dataset(tmp_path / "classes", [0, 1, 1])
    refusal = (
        r"run judge: the model is a regression model but split 'validation' .* holds classification labels "
        r"\(inferred .* set dataset.task"
    )
    with pytest.raises(InvalidInputError, match=refusal):
        create_snapshot(_eval_only(classes, _model()), runs_dir=runs_dir, data_dir=None)
    scores = _dataset(tmp_path / "scores", [0.5, 1.25, 3.0])
    with pytest.raises(
        InvalidInputError, match=r"run judge: the model is a classification model but .* holds regression labels"
    ):
        create_snapshot(_eval_only(scores, _model("0", "1")), runs_dir=runs_dir, data_dir=None)

    snapshot = create_snapshot(_eval_only(scores, _model()), runs_dir=runs_dir, data_dir=None)
    assert snapshot.dataset_schema.task is TaskType.regression and snapshot.dataset_schema.label_names == ()
    assert read_split(snapshot, "validation")[LABEL] == [0.5, 1.25, 3.0]
    # Integer scores are regression data once the dataset says so.
    told = classes.model_copy(update={"task": TaskType.regression})
    assert (
        create_snapshot(_eval_only(told, _model()), runs_dir=runs_dir, data_dir=None).dataset_schema.task
        is TaskType.regression
    )


def test_a_missing_split_or_column_fails_on_one_line_naming_it(tmp_path: Path, runs_dir: Path) -> None:
    dataset = _dataset(tmp_path / "only-validation", ["0", "1"])
    with pytest.raises(InvalidInputError) as missing_split:
        create_snapshot(_eval_only(dataset, _model("0", "1"), eval_split="test"), runs_dir=runs_dir, data_dir=None)
    assert str(missing_split.value).startswith("run judge: evaluation split 'test': dataset")
    assert "no 'test' split" in str(missing_split.value) and "\n" not in str(missing_split.value)

    renamed = dataset.model_copy(update={"text_columns": ("review",)})
    with pytest.raises(
        InvalidInputError,
        match=r"run judge: .* text column\(s\) \['review'\] not in split 'validation' .* check dataset.text_columns",
    ):
        create_snapshot(_eval_only(renamed, _model("0", "1")), runs_dir=runs_dir, data_dir=None)
    relabelled = dataset.model_copy(update={"label_column": "stars"})
    with pytest.raises(
        InvalidInputError,
        match=r"run judge: .* no label column in split 'validation' \(given 'stars'.*set dataset.label_column",
    ):
        create_snapshot(_eval_only(relabelled, _model("0", "1")), runs_dir=runs_dir, data_dir=None)


def test_a_training_run_names_a_missing_eval_split_before_training(tmp_path: Path, runs_dir: Path) -> None:
    dataset = _dataset(tmp_path / "train-only", ["0", "1"], split="train")
    request = SnapshotInput(run_id="trainee", dataset=dataset, eval_split="validation")
    with pytest.raises(
        InvalidInputError, match=r"^run trainee: evaluation split 'validation': dataset .* no 'validation' split"
    ):
        create_snapshot(request, runs_dir=runs_dir, data_dir=None)


def test_eval_only_snapshots_are_shared_by_runs_and_keyed_by_the_models_classes(tmp_path: Path, runs_dir: Path) -> None:
    dataset = _dataset(tmp_path / "shared", ["0", "1", "1"])
    first = create_snapshot(_eval_only(dataset, _model("0", "1")), runs_dir=runs_dir, data_dir=None)
    other_run = SnapshotInput.for_model(run_id="another", dataset=dataset, model=_model("0", "1"))
    again = create_snapshot(other_run, runs_dir=runs_dir, data_dir=None)
    assert again.snapshot_id == first.snapshot_id and again.reused
    wider = create_snapshot(_eval_only(dataset, _model("0", "1", "2")), runs_dir=runs_dir, data_dir=None)
    assert (
        wider.snapshot_id != first.snapshot_id
        and read_split(wider, "validation")[LABEL] == read_split(first, "validation")[LABEL]
    )


def test_snapshot_ids_of_training_runs_are_unchanged(runs_dir: Path, data_dir: Path) -> None:
    # Run directories and evaluation cells refer to snapshots by id: the ids of existing selections are fixed.
    request = SnapshotInput(
        run_id="r", dataset=DatasetSpec(name="glue/sst2"), max_train_samples=200, max_eval_samples=50, seed=1
    )
    assert create_snapshot(request, runs_dir=runs_dir, data_dir=data_dir).snapshot_id == "374c9521ff190cb1"
    first_n = request.model_copy(update={"shuffle_before_select": False})
    assert create_snapshot(first_n, runs_dir=runs_dir, data_dir=data_dir).snapshot_id == "d53d9a73b2651721"


def test_model_fields_belong_to_eval_only_snapshots(tmp_path: Path) -> None:
    dataset = DatasetSpec(path=str(tmp_path))
    with pytest.raises(ValidationError, match="task and label_names describe the model of an eval-only snapshot"):
        SnapshotInput(run_id="r", dataset=dataset, label_names=("0", "1"))
    with pytest.raises(ValidationError, match="an eval-only snapshot needs the model's task"):
        SnapshotInput(run_id="r", dataset=dataset, train_table=False)
    with pytest.raises(ValidationError, match="an eval-only snapshot of a classifier needs the model's label_names"):
        SnapshotInput(run_id="r", dataset=dataset, train_table=False, task=TaskType.classification)
    with pytest.raises(ValidationError, match="max_train_samples selects training rows"):
        SnapshotInput(run_id="r", dataset=dataset, train_table=False, task=TaskType.regression, max_train_samples=5)
    assert _eval_only(dataset, _model()).label_names is None
