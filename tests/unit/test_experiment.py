from __future__ import annotations

import pytest

from bert_eval.experiment import ExperimentFileError, load_experiment, parse_experiment

RUN = {"model": "m", "dataset": "glue/sst2", "train": {"epochs": 1}}


def test_minimal_file_gets_deterministic_ids() -> None:
    first = parse_experiment({"runs": [RUN]})
    second = parse_experiment({"runs": [RUN]})
    assert first.id == second.id and first.id.startswith("exp-")
    assert first.runs[0].id == second.runs[0].id and first.runs[0].id.startswith("run-")
    assert first.runs[0].dataset.name == "glue/sst2"


def test_issue_example_parses(tmp_path) -> None:
    path = tmp_path / "e.yaml"
    path.write_text(
        """
experiment_id: sst2-minilm
runs:
  - run_id: minilm-lr5e-5
    model: sentence-transformers/all-MiniLM-L6-v2
    dataset: glue/sst2
    train: {epochs: 1, batch_size: 32, learning_rate: 5.0e-5, max_seq_length: 128,
            max_train_samples: 4000, seed: 42, checkpoint_every_steps: 50}
    eval: {split: validation, max_eval_samples: null}
"""
    )
    experiment = load_experiment(path)
    assert experiment.id == "sst2-minilm"
    run = experiment.runs[0]
    assert (run.id, run.train.max_train_samples, run.primary_eval.split) == ("minilm-lr5e-5", 4000, "validation")


@pytest.mark.parametrize("bad", ["../x", "a/b", "-lead", "trail-", "x" * 64, "", "a..b", "sp ace"])
def test_path_tricks_and_bad_run_ids_are_rejected(bad: str) -> None:
    with pytest.raises(ExperimentFileError, match="run_id"):
        parse_experiment({"runs": [{**RUN, "run_id": bad}]})


def test_run_ids_are_normalized_to_lowercase() -> None:
    assert parse_experiment({"runs": [{**RUN, "run_id": " MiniLM-A "}]}).runs[0].id == "minilm-a"


def test_duplicate_run_ids_are_rejected() -> None:
    with pytest.raises(ExperimentFileError, match="share run_id 'a'"):
        parse_experiment({"runs": [{**RUN, "run_id": "a"}, {**RUN, "run_id": "A"}]})


def test_error_names_the_run_and_the_field() -> None:
    with pytest.raises(ExperimentFileError) as err:
        parse_experiment({"runs": [RUN, {**RUN, "run_id": "bad-lr", "train": {"learning_rate": -1}}]})
    message = str(err.value)
    assert "runs[1]" in message and "bad-lr" in message and "train.learning_rate" in message


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ExperimentFileError, match="epoch"):
        parse_experiment({"runs": [{**RUN, "train": {"epoch": 1}}]})
    with pytest.raises(ExperimentFileError, match="unknown top-level"):
        parse_experiment({"runs": [RUN], "rnus": []})


def test_dataset_needs_exactly_one_source() -> None:
    with pytest.raises(ExperimentFileError, match="exactly one"):
        parse_experiment({"runs": [{**RUN, "dataset": {"name": "a", "path": "/b"}}]})


def test_grid_expands_hyperparameter_lists_into_named_runs() -> None:
    experiment = parse_experiment(
        {
            "experiment_id": "sweep",
            "defaults": {"model": "m", "dataset": "glue/sst2"},
            "runs": [{"run_id": "base"}],
            "grid": {"train.learning_rate": [1e-5, 3e-5], "train.seed": [1, 2]},
        }
    )
    assert len(experiment.runs) == 4
    ids = [r.id for r in experiment.runs]
    assert len(set(ids)) == 4 and all(i.startswith("base-learning-rate-") for i in ids)
    assert {(r.train.learning_rate, r.train.seed) for r in experiment.runs} == {
        (1e-5, 1),
        (1e-5, 2),
        (3e-5, 1),
        (3e-5, 2),
    }


def test_invalid_yaml_is_reported_with_the_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("runs: [\n")
    with pytest.raises(ExperimentFileError, match="bad.yaml: not valid YAML"):
        load_experiment(path)
