from __future__ import annotations

import json
from pathlib import Path

import datasets
import pandas as pd
import pytest

from bert_eval.core.data.loading import infer_schema, load_splits
from bert_eval.core.errors import InvalidInputError
from bert_eval.spec import DatasetSpec, TaskType


def test_sst2_from_the_local_mirror_is_single_sentence_binary(data_dir: Path) -> None:
    spec = DatasetSpec(name="glue/sst2")
    splits = load_splits(spec, ["train", "validation"], data_dir=data_dir)
    assert (len(splits["train"]), len(splits["validation"])) == (67349, 872)
    schema = infer_schema(splits["train"], spec)
    assert schema.text_columns == ("sentence",)
    assert (schema.label_column, schema.task, schema.label_names) == ("label", TaskType.classification, ("0", "1"))


def test_pair_csv_with_string_labels(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"sentence1": ["a b", "c d", "e f"], "sentence2": ["x", "y", "z"], "label": ["entail", "neutral", "contradict"]}
    )
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.to_csv(tmp_path / "dev.csv", index=False)  # GLUE's name for validation
    spec = DatasetSpec(path=str(tmp_path))
    splits = load_splits(spec, ["train", "validation"], data_dir=None)
    schema = infer_schema(splits["train"], spec)
    assert schema.text_columns == ("sentence1", "sentence2")
    assert schema.label_names == ("contradict", "entail", "neutral") and schema.num_labels == 3


def test_float_labels_mean_regression_jsonl(tmp_path: Path) -> None:
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "score": i / 2} for i in range(6)]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = DatasetSpec(path=str(tmp_path))
    schema = infer_schema(load_splits(spec, ["train"], data_dir=None)["train"], spec)
    assert schema.task is TaskType.regression and schema.num_labels == 1
    assert schema.text_columns == ("premise", "hypothesis") and schema.label_column == "score"


def test_parquet_and_save_to_disk(tmp_path: Path) -> None:
    frame = pd.DataFrame({"review": ["good", "bad", "fine"], "label": [1, 0, 2]})
    (tmp_path / "pq").mkdir()
    frame.to_parquet(tmp_path / "pq" / "train.parquet")
    spec = DatasetSpec(path=str(tmp_path / "pq"))
    schema = infer_schema(load_splits(spec, ["train"], data_dir=None)["train"], spec)
    assert schema.text_columns == ("review",) and schema.label_names == ("0", "1", "2")

    datasets.DatasetDict({"train": datasets.Dataset.from_pandas(frame)}).save_to_disk(str(tmp_path / "disk"))
    spec = DatasetSpec(path=str(tmp_path / "disk"))
    assert len(load_splits(spec, ["train"], data_dir=None)["train"]) == 3


def test_missing_label_column_is_a_clear_error(tmp_path: Path) -> None:
    pd.DataFrame({"text": ["a", "b"], "target": [0, 1]}).to_csv(tmp_path / "train.csv", index=False)
    spec = DatasetSpec(path=str(tmp_path))
    with pytest.raises(InvalidInputError, match="no label column.*set dataset.label_column"):
        infer_schema(load_splits(spec, ["train"], data_dir=None)["train"], spec)
    given = DatasetSpec(path=str(tmp_path), label_column="target")
    assert infer_schema(load_splits(given, ["train"], data_dir=None)["train"], given).label_column == "target"


def test_empty_dataset_and_missing_split_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n")
    spec = DatasetSpec(path=str(tmp_path))
    with pytest.raises(InvalidInputError, match="split is empty"):
        infer_schema(load_splits(spec, ["train"], data_dir=None)["train"], spec)
    with pytest.raises(InvalidInputError, match="no 'validation' split"):
        load_splits(spec, ["validation"], data_dir=None)


def test_unknown_dataset_names_the_mirror(tmp_path: Path) -> None:
    import datasets

    assert datasets.config.HF_HUB_OFFLINE  # tests/conftest.py sets offline mode before the import
    with pytest.raises(InvalidInputError, match="no-such/dataset.*local mirror"):
        load_splits(DatasetSpec(name="no-such/dataset"), ["train"], data_dir=tmp_path)


def test_mirror_names_cannot_escape_the_mirror(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="may not contain"):
        load_splits(DatasetSpec(name="../etc"), ["train"], data_dir=tmp_path)


def _labels_file(tmp_path: Path, suffix: str, labels: list[str]) -> DatasetSpec:
    rows = "\n".join(f"sentence {i}{',' if suffix == '.csv' else chr(9)}{label}" for i, label in enumerate(labels))
    sep = "," if suffix == ".csv" else "\t"
    (tmp_path / f"train{suffix}").write_text(f"sentence{sep}label\n{rows}\n")
    return DatasetSpec(path=str(tmp_path))


@pytest.mark.parametrize("suffix", [".tsv", ".csv"])
@pytest.mark.parametrize(
    ("labels", "cause"),
    [
        (["0", "1", "", "1"], r"1 row\(s\) have a missing, NaN or empty label \(row indices 2\)"),
        (["0", "1", "NaN", "0"], r"1 row\(s\) have a missing, NaN or empty label \(row indices 2\)"),
        (["0", "1", "positive", "0"], r"labels mix kinds \(number e.g. '0', word e.g. 'positive'\)"),
    ],
)
def test_missing_nan_and_mixed_labels_never_become_classes(
    tmp_path: Path, suffix: str, labels: list[str], cause: str
) -> None:
    spec = _labels_file(tmp_path, suffix, labels)
    with pytest.raises(InvalidInputError, match=rf"split 'train', label column 'label': {cause}"):
        infer_schema(load_splits(spec, ["train"], data_dir=None)["train"], spec)


def test_jsonl_null_and_nan_labels_are_missing(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 0}, {"text": "b", "label": 1}, {"text": "c", "label": None}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    spec = DatasetSpec(path=str(tmp_path))
    with pytest.raises(InvalidInputError, match=r"missing, NaN or empty label \(row indices 2\)"):
        infer_schema(load_splits(spec, ["train"], data_dir=None)["train"], spec)


def test_clean_word_labels_are_one_kind(tmp_path: Path) -> None:
    spec = _labels_file(tmp_path, ".tsv", ["pos", "neg", "neg"])
    assert infer_schema(load_splits(spec, ["train"], data_dir=None)["train"], spec).label_names == ("neg", "pos")
