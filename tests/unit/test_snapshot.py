from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.snapshot import LABEL, TEXT, create_snapshot, open_snapshot, read_split
from bert_eval.types import DatasetSpec, SnapshotInput


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
