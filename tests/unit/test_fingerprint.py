"""RunSpec.fingerprint() is stable across releases: run directories written today stay valid."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field

from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.storage.rundir import run_dir_conflict
from bert_eval.spec import RunSpec, TrainHyperparameters

SPEC = {
    "run_id": "pinned",
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "dataset": "glue/sst2",
    "train": {"epochs": 2, "batch_size": 16},
    "eval": {"max_eval_samples": 128},
}
# Written by the release before the canonical form existed (bcf0f0d): its fingerprint is what
# every existing run directory, checkpoint manifest and training summary records.
PINNED = "51e28764b9ce6eee"
RECORD_OF_THAT_RELEASE = {
    "fingerprint": PINNED,
    "spec": {
        "run_id": "pinned",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "dataset": {
            "name": "glue/sst2",
            "path": None,
            "config": None,
            "text_columns": None,
            "label_column": None,
            "task": None,
            "train_split": "train",
        },
        "train": {
            "epochs": 2.0,
            "batch_size": 16,
            "learning_rate": 5e-05,
            "weight_decay": 0.0,
            "warmup_ratio": 0.0,
            "max_seq_length": 128,
            "max_train_samples": None,
            "seed": 42,
            "checkpoint_every_steps": 50,
            "checkpoint_every_seconds": 300.0,
            "keep_checkpoints": 2,
            "logging_steps": 10,
        },
        "eval": {"split": "validation", "max_eval_samples": 128, "batch_size": 64},
    },
}


def test_fingerprint_is_pinned() -> None:
    assert RunSpec.model_validate(SPEC).fingerprint() == PINNED
    # Derived run ids come from it too: a spec without run_id keeps its id.
    assert (
        RunSpec.model_validate({k: v for k, v in SPEC.items() if k != "run_id"}).with_canonical_id().id
        == "run-51e28764b9"
    )


def test_a_spec_json_written_by_the_previous_release_still_matches(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path, "pinned")
    layout.root.mkdir(parents=True)
    layout.spec_file.write_text(json.dumps(RECORD_OF_THAT_RELEASE))
    layout.summary_file.write_text("{}")  # it holds results, so a mismatch would be refused
    spec = RunSpec.model_validate(RECORD_OF_THAT_RELEASE["spec"])
    assert spec.fingerprint() == PINNED
    assert run_dir_conflict(layout, spec) is None


class _NextReleaseTrain(TrainHyperparameters):
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)  # a new hyperparameter, default = old behaviour


class _NextReleaseRunSpec(RunSpec):
    train: _NextReleaseTrain = _NextReleaseTrain()
    compile_model: bool = False  # a new top-level optional field


def test_adding_an_optional_field_with_a_default_keeps_every_fingerprint() -> None:
    today = RunSpec.model_validate(SPEC)
    tomorrow = _NextReleaseRunSpec.model_validate(SPEC)
    assert "label_smoothing" in tomorrow.train.model_dump()
    assert tomorrow.fingerprint() == today.fingerprint() == PINNED
    # Setting the new field (or any existing one) away from its default is a different run.
    assert (
        _NextReleaseRunSpec.model_validate({**SPEC, "train": {**SPEC["train"], "label_smoothing": 0.1}}).fingerprint()
        != PINNED
    )
    assert _NextReleaseRunSpec.model_validate({**SPEC, "compile_model": True}).fingerprint() != PINNED
    assert RunSpec.model_validate({**SPEC, "train": {**SPEC["train"], "seed": 43}}).fingerprint() != PINNED


def test_the_run_id_is_not_part_of_the_fingerprint() -> None:
    assert RunSpec.model_validate({**SPEC, "run_id": "other"}).fingerprint() == PINNED


def test_evaluation_batch_defaults_of_every_release_keep_the_fingerprint() -> None:
    # The first release's default (64), the last release's (256, written out in its spec.json and in
    # workflow inputs in flight during an upgrade) and today's (None: chosen per device) are one run.
    for batch in (None, 64, 256):
        spec = RunSpec.model_validate({**SPEC, "eval": {**SPEC["eval"], "batch_size": batch}})
        assert spec.fingerprint() == PINNED, batch
    assert RunSpec.model_validate({**SPEC, "eval": {**SPEC["eval"], "batch_size": 128}}).fingerprint() != PINNED
