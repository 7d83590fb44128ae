"""The reference design's coordinator input, mapped onto bert-eval run specs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot, read_split
from bert_eval.core.records import EvalResult
from bert_eval.experiment import parse_experiment
from bert_eval.reference_compat import ReferenceInputError, is_reference_input, parse_reference_input, reference_result
from bert_eval.spec import RunSpec


def _config(**overrides: object) -> dict:
    config: dict = {
        "fine_tune_config": {
            "model_name": "sentence-transformers/all-MiniLM-L6-v2",
            "dataset_name": "glue",
            "dataset_config_name": "sst2",
            "num_epochs": 1,
            "batch_size": 32,
            "learning_rate": 5e-5,
            "max_seq_length": 128,
            "max_train_samples": 4000,
            "max_eval_samples": None,
            "seed": 42,
        },
        "evaluation_config": {"split": "validation", "max_eval_samples": None, "batch_size": 64},
    }
    for key, value in overrides.items():
        section, _, field = key.partition("__")
        if field:
            config[section][field] = value
        else:
            config[section] = value
    return config


def test_config_maps_onto_the_same_run_as_the_equivalent_experiment_file() -> None:
    (run,) = parse_reference_input({"configs": [_config()]})
    experiment = parse_experiment(
        {
            "runs": [
                {
                    "model": "sentence-transformers/all-MiniLM-L6-v2",
                    "dataset": "glue/sst2",
                    "train": {
                        "epochs": 1,
                        "batch_size": 32,
                        "learning_rate": 5e-5,
                        "max_seq_length": 128,
                        "max_train_samples": 4000,
                        "seed": 42,
                    },
                    "eval": {"split": "validation", "max_eval_samples": None, "batch_size": 64},
                }
            ]
        }
    )
    # Same content => same derived run id, fingerprint (reuse, checkpoints) and snapshot selection.
    assert run.spec.id == experiment.runs[0].id
    assert run.spec.fingerprint() == experiment.runs[0].fingerprint()
    assert SnapshotInput.for_run(run.spec) == SnapshotInput.for_run(experiment.runs[0])
    assert (run.dataset_name, run.dataset_config_name) == ("glue", "sst2")


def test_every_field_lands_where_bert_eval_reads_it() -> None:
    (run,) = parse_reference_input(
        {
            "configs": [
                _config(
                    run_id="My-Run",
                    fine_tune_config__text_field="sentence1",
                    fine_tune_config__text_pair_field="sentence2",
                    fine_tune_config__label_field="score",
                    fine_tune_config__task_type="regression",
                    fine_tune_config__dataset_config_name="stsb",
                    fine_tune_config__shuffle_before_select=False,
                    fine_tune_config__use_gpu=False,
                    fine_tune_config__max_eval_samples=200,
                    evaluation_config={
                        "dataset_config_name": "stsb",
                        "max_eval_samples": 200,
                        "split": "validation",
                        "batch_size": 8,
                        "use_gpu": False,
                    },
                )
            ]
        }
    )
    spec = run.spec
    assert spec.id == "my-run"  # canonical: lower-cased
    assert spec.dataset.name == "glue/stsb" and spec.dataset.config is None
    assert spec.dataset.text_columns == ("sentence1", "sentence2") and spec.dataset.label_column == "score"
    assert spec.dataset.task is not None and spec.dataset.task.value == "regression"
    assert (spec.train.epochs, spec.train.batch_size, spec.train.max_train_samples) == (1, 32, 4000)
    assert spec.train.shuffle_before_select is False and spec.train.use_gpu is False
    evaluation = spec.primary_eval
    assert (evaluation.split, evaluation.max_eval_samples, evaluation.batch_size, evaluation.use_gpu) == (
        "validation",
        200,
        8,
        False,
    )


def test_run_id_is_derived_from_content_when_absent_and_reference_defaults_apply() -> None:
    (a,) = parse_reference_input({"configs": [{"fine_tune_config": {"model_name": "m"}}]})
    (b,) = parse_reference_input({"configs": [{"fine_tune_config": {"model_name": "m"}}]})
    (c,) = parse_reference_input({"configs": [{"fine_tune_config": {"model_name": "m", "seed": 1}}]})
    assert a.spec.id == b.spec.id != c.spec.id
    assert a.spec.id.startswith("run-")
    # The reference design's defaults: 3 epochs, batch 16, 2,000 training and 1,000 evaluation rows.
    assert (a.spec.train.epochs, a.spec.train.batch_size, a.spec.train.max_train_samples) == (3, 16, 2000)
    assert a.spec.primary_eval.max_eval_samples == 1000 and a.spec.dataset.name == "glue/sst2"


def test_placement_and_new_knobs_at_default_leave_the_fingerprint_unchanged() -> None:
    base = RunSpec(model="m", dataset="glue/sst2")
    on_cpu = base.model_copy(update={"train": base.train.model_copy(update={"use_gpu": False})})
    first_n = base.model_copy(update={"train": base.train.model_copy(update={"shuffle_before_select": False})})
    assert on_cpu.fingerprint() == base.fingerprint()
    assert first_n.fingerprint() != base.fingerprint()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            _config(fine_tune_config__learning_rte=1e-5),
            "configs.0.fine_tune_config.learning_rte: Extra inputs are not permitted",
        ),
        (_config(colour="red"), "configs.0.colour: Extra inputs are not permitted"),
        (
            _config(run_id="a", fine_tune_config__run_id="b"),
            "configs[0]: contradictory run ids (run_id='a', fine_tune_config.run_id='b')",
        ),
        (
            _config(fine_tune_config__run_id="a", evaluation_config={"run_id": "b", "max_eval_samples": None}),
            "contradictory run ids",
        ),
        (_config(run_id="../etc"), "configs[0]: run_id: invalid run_id '../etc'"),
        (
            _config(evaluation_config={"max_seq_length": 256, "max_eval_samples": None}),
            "evaluation_config.max_seq_length (256) differs from fine_tune_config.max_seq_length (128)",
        ),
        (
            _config(evaluation_config={"dataset_config_name": "cola", "max_eval_samples": None}),
            "evaluation_config dataset 'glue/cola' differs from fine_tune_config dataset 'glue/sst2'",
        ),
        (
            _config(evaluation_config={"max_eval_samples": 100}),
            "fine_tune_config.max_eval_samples (None) differs from evaluation_config.max_eval_samples (100)",
        ),
        (
            _config(evaluation_config={"model_path": "/tmp/m", "max_eval_samples": None}),
            "evaluation_config.model_path is set",
        ),
        (_config(fine_tune_config__text_pair_field="sentence2"), "text_pair_field is set without text_field"),
        (_config(fine_tune_config__task_type="ranking"), "configs.0.fine_tune_config.task_type"),
        (
            _config(dataset_snapshot={"snapshot_id": "glue_sst2_abc"}),
            "dataset_snapshot.snapshot_id 'glue_sst2_abc' is not a bert-eval snapshot id",
        ),
        (
            _config(dataset_snapshot={"snapshot_id": "0123456789abcdef", "dataset_name": "imdb"}),
            "dataset_snapshot is of dataset 'imdb'",
        ),
    ],
)
def test_unknown_and_contradictory_fields_are_refused_naming_the_config_and_field(config: dict, expected: str) -> None:
    with pytest.raises(ReferenceInputError) as caught:
        parse_reference_input({"configs": [config]})
    assert expected in str(caught.value)


def test_duplicate_run_ids_are_refused() -> None:
    with pytest.raises(ReferenceInputError, match=r"configs\[0\] and configs\[1\] share run_id 'same'"):
        parse_reference_input({"configs": [_config(run_id="same"), _config(run_id="SAME")]})


def test_empty_or_misshapen_input_is_refused() -> None:
    with pytest.raises(ReferenceInputError, match="configs: List should have at least 1 item"):
        parse_reference_input({"configs": []})
    with pytest.raises(ReferenceInputError, match="configs.0.fine_tune_config: Field required"):
        parse_reference_input({"configs": [{"evaluation_config": {}}]})


def test_snapshot_pin_is_carried_canonically() -> None:
    pin = {"snapshot_id": "0123456789ABCDEF", "dataset_name": "glue", "dataset_config": "sst2"}
    (run,) = parse_reference_input({"configs": [_config(dataset_snapshot=pin)]})
    assert run.snapshot_id == "0123456789abcdef"


def test_reference_input_is_told_apart_from_bert_eval_input() -> None:
    assert is_reference_input({"configs": []})
    assert not is_reference_input({"experiment": {"runs": []}})
    assert not is_reference_input([{"configs": []}])


def test_result_has_the_reference_fields_and_accuracy_only_for_classification() -> None:
    (run,) = parse_reference_input({"configs": [_config(run_id="r1")]})
    evaluation = EvalResult(
        run_id="r1",
        split="validation",
        examples=872,
        metrics={"accuracy": 0.81, "f1": 0.8, "mcc": 0.6},
        duration_s=1.0,
        path="x",
    )
    result = reference_result(run, evaluation, reused=True).model_dump()
    assert {
        k: result[k] for k in ("run_id", "dataset_name", "dataset_config_name", "split", "num_examples", "accuracy")
    } == {
        "run_id": "r1",
        "dataset_name": "glue",
        "dataset_config_name": "sst2",
        "split": "validation",
        "num_examples": 872,
        "accuracy": 0.81,
    }
    regression = evaluation.model_copy(update={"metrics": {"pearson": 0.5, "spearman": 0.4, "mse": 1.2}})
    scored = reference_result(run, regression, reused=False)
    assert scored.accuracy is None and scored.metrics["pearson"] == 0.5


def test_shuffle_before_select_false_trains_on_the_first_rows(runs_dir: Path, data_dir: Path) -> None:
    config = _config(
        fine_tune_config__shuffle_before_select=False,
        fine_tune_config__max_train_samples=50,
        fine_tune_config__max_eval_samples=20,
        evaluation_config={"max_eval_samples": 20},
    )
    (first_n,) = parse_reference_input({"configs": [config]})
    config["fine_tune_config"]["shuffle_before_select"] = True
    (shuffled,) = parse_reference_input({"configs": [config]})
    with open(data_dir / "glue" / "sst2" / "train.tsv", newline="") as handle:
        head = [row["sentence"] for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)][:50]

    taken = create_snapshot(SnapshotInput.for_run(first_n.spec), runs_dir=runs_dir, data_dir=data_dir)
    assert read_split(taken, "train")["text"] == head
    sampled = create_snapshot(SnapshotInput.for_run(shuffled.spec), runs_dir=runs_dir, data_dir=data_dir)
    assert read_split(sampled, "train")["text"] != head and sampled.snapshot_id != taken.snapshot_id
