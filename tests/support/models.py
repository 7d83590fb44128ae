"""Helpers for tests of model sources: a model saved with chosen class names, and a run whose training finished."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from bert_eval.core.records import DatasetSchema, TrainingSummary
from bert_eval.core.storage.layout import RunLayout
from bert_eval.spec import TaskType


def with_label_names(model_dir: Path, names: tuple[str, ...]) -> Path:
    """Give a saved classifier these class names (config.id2label / label2id), as training does."""
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(names)}
    config["label2id"] = {name: i for i, name in enumerate(names)}
    config_file.write_text(json.dumps(config))
    return model_dir


def finished_run(runs_dir: Path, run_id: str, model_dir: Path) -> RunLayout:
    """A run directory as a finished training leaves it: the final model and the training summary."""
    layout = RunLayout(runs_dir, run_id)
    layout.root.mkdir(parents=True)
    shutil.copytree(model_dir, layout.model_dir)
    schema = DatasetSchema(
        text_columns=("sentence",), label_column="label", task=TaskType.classification, label_names=("0", "1")
    )
    summary = TrainingSummary(
        run_id=run_id,
        model=str(model_dir),
        final_loss=0.5,
        steps=1,
        epochs=1.0,
        checkpoints_saved=1,
        resumes=0,
        wall_time_s=1.0,
        train_samples=1,
        dataset_schema=schema,
        model_dir=str(layout.model_dir),
        snapshot_id="0" * 16,
    )
    layout.summary_file.write_text(json.dumps({"fingerprint": "f" * 16, "summary": summary.model_dump(mode="json")}))
    return layout
