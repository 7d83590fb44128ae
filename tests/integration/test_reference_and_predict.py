"""A reference-design client (the `temporal` CLI, by workflow type name) gets its BertEvalResult list from
bert-eval's workers; `bert-eval predict` labels the same rows as the evaluation did."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import Stack

from bert_eval.temporal.devserver import find_temporal_binary

pytestmark = pytest.mark.integration

EVAL_ROWS = 128


def _reference_config(model_dir: Path, run_id: str | None) -> dict:
    """What a client of the reference design sends, with bert-eval's tiny test model as `model_name`."""
    return {
        "run_id": run_id,
        "fine_tune_config": {
            "model_name": str(model_dir),
            "dataset_name": "glue",
            "dataset_config_name": "sst2",
            "num_epochs": 1,
            "batch_size": 16,
            "learning_rate": 1e-3,
            "max_seq_length": 64,
            "use_gpu": False,
            "max_train_samples": 256,
            "max_eval_samples": EVAL_ROWS,
            "task_type": "auto",
            "shuffle_before_select": True,
            "seed": 7,
        },
        "evaluation_config": {
            "dataset_name": "glue",
            "dataset_config_name": "sst2",
            "split": "validation",
            "max_eval_samples": EVAL_ROWS,
            "max_seq_length": 64,
            "batch_size": 64,
            "use_gpu": False,
        },
    }


def _temporal_execute(
    stack: Stack, workflow_id: str, payload: dict, workflow_type: str = "CoordinatorWorkflow"
) -> dict:
    """`temporal workflow execute --type CoordinatorWorkflow ...`, as a reference client's operator would run it."""
    command = [
        str(find_temporal_binary()),
        "workflow", "execute",
        "--type", workflow_type,
        "--task-queue", "bert-eval-task-queue",
        "--workflow-id", workflow_id,
        "--input", json.dumps(payload),
        "--address", stack.address,
        "--namespace", stack.namespace,
        "--output", "json",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.stdout.strip(), f"no output (exit {done.returncode}): {done.stderr}"
    return json.loads(done.stdout)


def _bert_eval(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bert_eval", *args], env=stack.env(), capture_output=True, text=True, timeout=300
    )


def test_reference_client_gets_bert_eval_results_and_predictions_match_the_evaluation(
    served: Stack, tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    payload = {"configs": [_reference_config(tiny_model_dir, "Ref-Run"), _reference_config(tiny_model_dir, None)]}

    reply = _temporal_execute(served, "reference-client", payload)
    assert reply["status"] == "COMPLETED", reply
    results = reply["result"]
    assert isinstance(results, list) and len(results) == 2
    first, second = results
    assert first["run_id"] == "ref-run"  # canonical: lower-cased
    assert second["run_id"].startswith("run-")  # derived from the config's content
    for result in results:
        assert (result["dataset_name"], result["dataset_config_name"], result["split"]) == (
            "glue",
            "sst2",
            "validation",
        )
        assert result["num_examples"] == EVAL_ROWS
        assert 0.0 <= result["accuracy"] <= 1.0
        assert result["accuracy"] == result["metrics"]["accuracy"]
        assert (served.runs_dir / "runs" / result["run_id"] / "model" / "config.json").is_file()
    # Same configs, same seed: both runs trained on the same snapshot and reached the same accuracy.
    assert first["accuracy"] == second["accuracy"]

    # The same input again is served from disk: nothing is trained twice.
    again = _temporal_execute(served, "reference-client-again", payload)
    assert again["status"] == "COMPLETED", again
    assert [r["reused"] for r in again["result"]] == [True, True]
    assert [r["accuracy"] for r in again["result"]] == [r["accuracy"] for r in results]

    # The reference client's direct BertEvalWorkflow call evaluates an existing model: the run's final model,
    # named as the reference design names it, on the same rows gives the same accuracy, as a BertEvalResult.
    request = {
        "run_id": "ref-run", "dataset_name": "glue", "dataset_config_name": "sst2", "split": "validation",
        "max_eval_samples": EVAL_ROWS, "max_seq_length": 64, "batch_size": 32, "use_gpu": False,
        "model_path": "./bert_runs/ref-run", "seed": 42,
    }  # fmt: skip
    direct = _temporal_execute(served, "reference-eval", request, "BertEvalWorkflow")
    assert direct["status"] == "COMPLETED", direct
    evaluated = direct["result"]
    assert (evaluated["run_id"], evaluated["num_examples"], evaluated["split"]) == ("ref-run", EVAL_ROWS, "validation")
    assert evaluated["accuracy"] == first["accuracy"] and evaluated["reused"] is False
    again = _temporal_execute(served, "reference-eval-again", {**request, "model_path": "ref-run"}, "BertEvalWorkflow")
    assert again["status"] == "COMPLETED" and again["result"]["reused"] is True, again
    # A model_path outside the runs volume (and the models mirror) is refused, naming what is allowed.
    refused = _temporal_execute(served, "reference-eval-outside", {**request, "model_path": "/etc"}, "BertEvalWorkflow")
    assert refused["status"] == "FAILED", refused
    assert "outside the runs directory" in json.dumps(refused)

    # Predictions on the evaluated rows (the first EVAL_ROWS of SST-2 validation) agree with the evaluation.
    with open(data_dir / "glue" / "sst2" / "validation.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:EVAL_ROWS]
    texts_file = tmp_path / "texts.txt"
    texts_file.write_text("".join(row["sentence"] + "\n" for row in rows))
    done = _bert_eval(served, "predict", "Ref-Run", "--file", str(texts_file), "--json")
    assert done.returncode == 0, done.stderr
    predicted = json.loads(done.stdout)
    assert predicted["run_id"] == "ref-run" and len(predicted["predicted_labels"]) == EVAL_ROWS
    assert set(predicted["predicted_labels"]) <= {"0", "1"}  # SST-2's own labels in the mirror
    assert all(0.5 <= c <= 1.0 for c in predicted["confidences"])
    agree = sum(label == row["label"] for label, row in zip(predicted["predicted_labels"], rows, strict=True))
    assert agree / EVAL_ROWS == first["accuracy"]

    # Texts on the command line; the table names the labels.
    done = _bert_eval(served, "predict", "ref-run", "a gorgeous, witty film", "a dull mess")
    assert done.returncode == 0, done.stderr
    assert "a gorgeous, witty film" in done.stdout and "confidence" in done.stdout

    # Unknown run: a refusal naming it, in one line with exit code 2, within the activity's first attempt.
    done = _bert_eval(served, "predict", "no-such-run", "text")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: run no-such-run: no such run") and done.stderr.count("\n") == 1


def test_invalid_reference_input_fails_the_workflow_with_the_field_named(served: Stack, tiny_model_dir: Path) -> None:
    config = _reference_config(tiny_model_dir, "bad-run")
    config["evaluation_config"]["max_seq_length"] = 128
    config["fine_tune_config"]["run_id"] = "bad-run"

    reply = _temporal_execute(served, "reference-bad", {"configs": [config]})
    assert reply["status"] == "FAILED", reply
    message = json.dumps(reply)
    assert "configs[0] (run_id 'bad-run'): evaluation_config.max_seq_length (128) differs" in message

    typo = _reference_config(tiny_model_dir, "typo-run")
    typo["fine_tune_config"]["num_epoch"] = 2
    reply = _temporal_execute(served, "reference-typo", {"configs": [typo]})
    assert reply["status"] == "FAILED", reply
    assert "configs.0.fine_tune_config.num_epoch: Extra inputs are not permitted" in json.dumps(reply)

    # A pinned snapshot that the run's data selection does not reproduce: the run fails before training,
    # and the coordinator fails as the reference design's does when a run fails.
    pinned = _reference_config(tiny_model_dir, "pinned-run")
    pinned["dataset_snapshot"] = {"snapshot_id": "0123456789abcdef", "dataset_name": "glue", "dataset_config": "sst2"}
    reply = _temporal_execute(served, "reference-pinned", {"configs": [pinned]})
    assert reply["status"] == "FAILED", reply
    message = json.dumps(reply)
    assert "1 of 1 runs failed: " in message
    assert (
        "run pinned-run: dataset_snapshot pins snapshot 0123456789abcdef, but the run's data selection gives" in message
    )
    assert not (served.runs_dir / "runs" / "pinned-run" / "checkpoints").exists()
