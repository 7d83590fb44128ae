from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bert_eval.core.data.snapshot import (
    LABEL,
    TEXT,
    SnapshotInput,
    create_snapshot,
    eval_table,
    open_snapshot,
    read_split,
)
from bert_eval.core.errors import InvalidInputError
from bert_eval.spec import DatasetSpec


def _request(**overrides: object) -> SnapshotInput:
    fields = dict(run_id="r", dataset=DatasetSpec(name="glue/sst2"), max_train_samples=200, max_eval_samples=50, seed=1)
    fields.update(overrides)
    return SnapshotInput(**fields)


def test_snapshot_is_content_addressed_and_reused(runs_dir: Path, data_dir: Path) -> None:
    first = create_snapshot(_request(), runs_dir=runs_dir, data_dir=data_dir)
    assert first.splits == {"train": 200, "validation": 50} and not first.reused
    again = create_snapshot(_request(run_id="other-run"), runs_dir=runs_dir, data_dir=data_dir)
    assert again.snapshot_id == first.snapshot_id and again.reused
    different = create_snapshot(_request(seed=2), runs_dir=runs_dir, data_dir=data_dir)
    assert different.snapshot_id != first.snapshot_id
    train = read_split(first, "train")
    assert set(train.column_names) == {TEXT, LABEL} and set(train[LABEL]) <= {0, 1}


def test_damaged_snapshot_is_detected_kept_aside_and_rebuilt(runs_dir: Path, data_dir: Path) -> None:
    snapshot = create_snapshot(_request(), runs_dir=runs_dir, data_dir=data_dir)
    train_file = Path(snapshot.path) / "train.parquet"
    train_file.write_bytes(train_file.read_bytes()[:-10])
    with pytest.raises(InvalidInputError, match="does not match its recorded digest"):
        open_snapshot(snapshot.path)
    rebuilt = create_snapshot(_request(), runs_dir=runs_dir, data_dir=data_dir)
    assert rebuilt.snapshot_id == snapshot.snapshot_id and not rebuilt.reused
    open_snapshot(rebuilt.path)
    assert len(list((runs_dir / "snapshots").glob(".corrupt-*"))) == 1


def test_eval_labels_unseen_in_training_are_rejected(tmp_path: Path, runs_dir: Path) -> None:
    pd.DataFrame({"sentence": ["a", "b"], "label": [0, 1]}).to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    pd.DataFrame({"sentence": ["c"], "label": [7]}).to_csv(tmp_path / "validation.tsv", sep="\t", index=False)
    request = _request(dataset=DatasetSpec(path=str(tmp_path)), max_train_samples=None, max_eval_samples=None)
    with pytest.raises(InvalidInputError, match=r"run r: split 'validation' has label\(s\) \['7'\]"):
        create_snapshot(request, runs_dir=runs_dir, data_dir=None)


def test_evaluating_on_train_never_replaces_the_training_rows(runs_dir: Path, data_dir: Path) -> None:
    snapshot = create_snapshot(
        _request(eval_split="train", max_train_samples=200, max_eval_samples=50), runs_dir=runs_dir, data_dir=data_dir
    )
    # Training keeps its own 200-row selection; the evaluation table is the train split read on its own.
    assert snapshot.splits == {"train": 200, eval_table("train"): 50}
    training, evaluation = read_split(snapshot, "train"), read_split(snapshot, eval_table("train"))
    assert len(training) == 200 and len(evaluation) == 50
    whole = create_snapshot(
        _request(eval_split="train", max_train_samples=200, max_eval_samples=None), runs_dir=runs_dir, data_dir=data_dir
    )
    assert whole.splits == {"train": 200, eval_table("train"): 67349}
    assert eval_table("validation") == "validation"


def test_rows_changed_after_the_snapshot_are_refused_where_they_are_read(runs_dir: Path, data_dir: Path) -> None:
    snapshot = create_snapshot(_request(), runs_dir=runs_dir, data_dir=data_dir)
    file = Path(snapshot.path) / "validation.parquet"
    frame = pd.read_parquet(file)
    frame.loc[0, LABEL] = 1 - frame.loc[0, LABEL]  # one label flipped: still a valid parquet file
    frame.to_parquet(file)
    assert len(read_split(snapshot, "train", run_id="r")) == 200  # untouched tables still read
    with pytest.raises(
        InvalidInputError, match=r"run r: snapshot \w+: validation.parquet changed after the snapshot was taken"
    ):
        read_split(snapshot, "validation", run_id="r")


@pytest.mark.parametrize("bad", ["", "NaN", "positive"])
def test_bad_labels_in_the_eval_split_name_the_run(tmp_path: Path, runs_dir: Path, bad: str) -> None:
    pd.DataFrame({"sentence": ["a", "b", "c"], "label": [0, 1, 0]}).to_csv(
        tmp_path / "train.tsv", sep="\t", index=False
    )
    (tmp_path / "validation.tsv").write_text(f"sentence\tlabel\nc\t1\nd\t{bad}\n")
    request = _request(dataset=DatasetSpec(path=str(tmp_path)), max_train_samples=None, max_eval_samples=None)
    with pytest.raises(InvalidInputError, match=r"run r: split 'validation'"):
        create_snapshot(request, runs_dir=runs_dir, data_dir=None)
    assert not (runs_dir / "snapshots").exists() or not any((runs_dir / "snapshots").iterdir())
