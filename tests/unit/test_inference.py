"""Predictions from a trained run, without Temporal: the dataset's own label names, agreement with evaluation."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import datasets
import pytest

from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot, read_split
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation.batched import evaluate
from bert_eval.core.evaluation.inference import predict
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.spec import RunSpec


def _sst2_with_class_names(data_dir: Path, out: Path) -> Path:
    """SST-2 rows as a `save_to_disk` dataset whose label is a ClassLabel (as on the hub)."""
    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["negative", "positive"])}
    )
    splits = {}
    for split, rows in (("train", 160), ("validation", 48)):
        with open(data_dir / "glue" / "sst2" / f"{split}.tsv", newline="") as handle:
            records = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:rows]
        splits[split] = datasets.Dataset.from_dict(
            {"sentence": [r["sentence"] for r in records], "label": [int(r["label"]) for r in records]},
            features=features,
        )
    datasets.DatasetDict(splits).save_to_disk(str(out))
    return out


def test_predictions_use_class_names_and_agree_with_evaluation(
    tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    dataset = _sst2_with_class_names(data_dir, tmp_path / "sst2-named")
    spec = RunSpec(
        run_id="named",
        model=str(tiny_model_dir),
        dataset={"path": str(dataset)},
        train={"epochs": 1, "batch_size": 16, "learning_rate": 1e-3, "max_seq_length": 48, "seed": 5},
        eval={"batch_size": 16},
    )
    snapshot = create_snapshot(SnapshotInput.for_run(spec), runs_dir=runs_dir, data_dir=None)
    assert snapshot.dataset_schema.label_names == ("negative", "positive")
    summary = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    config = json.loads((Path(summary.model_dir) / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}

    evaluation = evaluate(
        run_id="named", model_dir=summary.model_dir, snapshot=snapshot, request=spec.primary_eval, runs_dir=runs_dir
    )
    rows = read_split(snapshot, "validation")
    result = predict(run_id="named", texts=rows["text"], runs_dir=runs_dir, batch_size=16)
    assert set(result.predicted_labels) <= {"negative", "positive"}
    assert all(0.5 <= c <= 1.0 for c in result.confidences)
    truth = [snapshot.dataset_schema.label_names[i] for i in rows["label"]]
    agree = sum(p == t for p, t in zip(result.predicted_labels, truth, strict=True))
    assert agree / len(truth) == evaluation.metrics["accuracy"]


def test_unknown_and_untrained_runs_are_clear_errors(runs_dir: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"run nowhere: no such run under"):
        predict(run_id="nowhere", texts=["a"], runs_dir=runs_dir)
    (runs_dir / "runs" / "half").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match=r"run half: training has not finished \(no final model in"):
        predict(run_id="half", texts=["a"], runs_dir=runs_dir)
