"""The bad-input matrix: each case fails with an error naming the run and the cause, at once (one
attempt, read from the workflow history), and changes no existing file.

Cases caught before submission run through the CLI in-process (no Temporal involved); cases that must
travel through the workers run as one experiment on a real dev server with real worker processes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path

import pytest
import yaml
from support.harness import Stack
from support.specs import tiny_run
from typer.testing import CliRunner

from bert_eval.cli import app
from bert_eval.core.data.snapshot import eval_table
from bert_eval.temporal.workflows import coordinator_workflow_id, training_workflow_id


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- before submission (CLI)


@pytest.mark.parametrize(
    ("train", "cause"),
    [
        ({"batch_size": 0}, "train.batch_size"),
        ({"epochs": 0}, "train.epochs"),
        ({"max_seq_length": 4}, "train.max_seq_length"),
        ({"max_seq_length": 100_000}, "train.max_seq_length"),
    ],
)
def test_out_of_bounds_hyperparameters_are_refused_by_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, train: dict, cause: str
) -> None:
    result = _cli_run(tmp_path, monkeypatch, tiny_run(tiny_model_dir, "out-of-bounds", **train))
    assert result.exit_code == 2, result.output
    assert "out-of-bounds" in result.output and cause in result.output and "Traceback" not in result.output


def test_corrupt_spec_json_and_symlinked_run_dir_are_refused_by_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path
) -> None:
    runs = tmp_path / "bert_runs" / "runs"
    (runs / "corrupt").mkdir(parents=True)
    (runs / "corrupt" / "spec.json").write_text('{"fingerprint": ')
    outside = tmp_path / "outside"
    outside.mkdir()
    (runs / "linked").symlink_to(outside)
    before = _files(tmp_path)

    corrupt = _cli_run(tmp_path, monkeypatch, tiny_run(tiny_model_dir, "corrupt"))
    assert corrupt.exit_code == 2 and "Traceback" not in corrupt.output
    assert "run corrupt:" in corrupt.output and "cannot be read" in corrupt.output
    linked = _cli_run(tmp_path, monkeypatch, tiny_run(tiny_model_dir, "linked"))
    assert linked.exit_code == 2 and "Traceback" not in linked.output
    assert "run linked:" in linked.output and "symbolic link" in linked.output
    assert {p: b for p, b in _files(tmp_path).items() if p.suffix != ".yaml"} == before
    assert list(outside.iterdir()) == []


def _cli_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: dict):
    experiment = tmp_path / f"{run['run_id']}.yaml"
    experiment.write_text(yaml.safe_dump({"runs": [run]}))
    monkeypatch.setenv("BERT_EVAL_RUNS_DIR", str(tmp_path / "bert_runs"))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")  # never reached: the refusal comes first
    return CliRunner().invoke(app, ["run", str(experiment)], terminal_width=400)


# --------------------------------------------------------------------------- through the workers


def _dataset(root: Path, name: str, labels: list[str]) -> dict:
    directory = root / name
    directory.mkdir(parents=True)
    rows = "".join(f"sentence number {i}\t{label}\n" for i, label in enumerate(labels))
    (directory / "train.tsv").write_text("sentence\tlabel\n" + rows)
    (directory / "validation.tsv").write_text("sentence\tlabel\nfine\t0\ngood\t1\n")
    return {"path": str(directory)}


async def _final_attempts(stack: Stack, workflow_id: str) -> tuple[dict[str, list[int]], float]:
    """From the workflow's history: activity type -> the attempt number of each activity's last start,
    and the longest time from a failed activity's scheduling to its failure (queueing included: Temporal
    writes an activity's started event only when the attempt ends, so its time says nothing)."""
    client = await stack.client()
    scheduled: dict[int, str] = {}
    scheduled_at: dict[int, object] = {}
    attempts: dict[str, list[int]] = {}
    failed_after = [0.0]
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
            scheduled_at[event.event_id] = event.event_time.ToDatetime()
        elif event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            attempts.setdefault(scheduled[started.scheduled_event_id], []).append(started.attempt)
        elif event.HasField("activity_task_failed_event_attributes"):
            began = scheduled_at[event.activity_task_failed_event_attributes.scheduled_event_id]
            failed_after.append((event.event_time.ToDatetime() - began).total_seconds())
    return attempts, max(failed_after)


@pytest.mark.integration
def test_bad_inputs_through_the_workers_fail_at_once_naming_run_and_cause(
    served: Stack, tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    model_file = tiny_model_dir / "config.json"
    runs = served.runs_dir / "runs"
    (runs / "corrupt-spec").mkdir(parents=True)
    (runs / "corrupt-spec" / "spec.json").write_text("{ not json")
    outside = tmp_path / "outside"
    outside.mkdir()
    (runs / "symlinked").symlink_to(outside)

    def case(run_id: str, **changes: object) -> dict:
        run = tiny_run(tiny_model_dir, run_id)
        run.update(changes)
        return run

    expected = {  # run id -> (the cause its error must name, where it is caught)
        "nan-labels": ("missing, NaN or empty label", "snapshot"),
        "empty-labels": ("missing, NaN or empty label", "snapshot"),
        "mixed-labels": ("labels mix kinds", "snapshot"),
        "corrupt-spec": ("cannot be read", "coordinator"),
        "symlinked": ("is a symbolic link", "coordinator"),
        "hub-offline": ("could not be loaded", "training"),
        "model-is-file": ("is a file, not a model directory", "training"),
        "no-weights": ("could not be loaded", "training"),
        "seq-too-long": ("exceeds", "training"),
    }
    experiment = {
        "experiment_id": "bad-inputs",
        "runs": [
            case("nan-labels", dataset=_dataset(data, "nan", ["0", "1", "NaN", "1"] * 4)),
            case("empty-labels", dataset=_dataset(data, "empty", ["0", "1", "", "1"] * 4)),
            case("mixed-labels", dataset=_dataset(data, "mixed", ["0", "1", "positive", "1"] * 4)),
            case("corrupt-spec"),
            case("symlinked"),
            case("hub-offline", model="no-such-org/no-such-model"),
            case("model-is-file", model=str(model_file)),
            case("no-weights", model=str(no_weights)),
            case("seq-too-long", train={**tiny_run(tiny_model_dir, "x")["train"], "max_seq_length": 256}),
        ],
    }
    before = _files(served.runs_dir)

    started = time.monotonic()
    result = served.run_experiment(experiment, timeout_s=300)
    total_s = time.monotonic() - started

    outcomes = {run.run_id: run for run in result.runs}
    seconds = {}
    for run_id, (cause, where) in expected.items():
        run = outcomes[run_id]
        assert run.status == "failed", run_id
        assert f"run {run_id}" in run.error and cause in run.error, (run_id, run.error)
        # The coordinator reads spec records and takes the snapshots; the training workflow fine-tunes.
        workflow_id = (
            coordinator_workflow_id("bad-inputs")
            if where in ("coordinator", "snapshot")
            else training_workflow_id(run_id)
        )
        attempts, seconds[run_id] = asyncio.run(_final_attempts(served, workflow_id))
        # Every activity start was attempt 1 (no Temporal retry), and the workflow did not run the
        # activity again as a deterministic failure (it would say so in the error).
        assert attempts and all(a == [1] * len(a) for a in attempts.values()), (run_id, attempts)
        assert "failed the same way" not in run.error, (run_id, run.error)
    # Nothing that existed was changed, and nothing was written through the link.
    after = _files(served.runs_dir)
    assert {p: after.get(p) for p in before} == before
    assert list(outside.iterdir()) == []
    with capsys.disabled():
        print(
            f"\nbad-input matrix: {len(expected)} runs failed in {total_s:.1f} s in total "
            f"(submission to result), all at attempt 1"
        )
        for run_id, (_cause, where) in expected.items():
            print(
                f"  {run_id:15s} failing {where:11s} activity failed {seconds[run_id]:5.1f} s after scheduling  "
                f"{outcomes[run_id].error[:130]}"
            )
    assert total_s < 120  # generous (load); measured 18-24 s for all nine together on a shared 2-core machine


@pytest.mark.integration
def test_evaluating_on_the_train_split_keeps_the_training_rows(served: Stack, tiny_model_dir: Path) -> None:
    run = tiny_run(tiny_model_dir, "eval-on-train")
    run["eval"] = {"split": "train", "max_eval_samples": 100}
    [outcome] = served.run_experiment({"experiment_id": "train-eval", "runs": [run]}, timeout_s=400).runs
    assert outcome.status == "completed", outcome.error
    assert outcome.training.train_samples == 256  # its own max_train_samples selection
    assert (outcome.evaluation.split, outcome.evaluation.examples) == ("train", 100)  # the train split, read apart
    manifest = json.loads((served.runs_dir / "snapshots" / outcome.training.snapshot_id / "manifest.json").read_text())
    assert manifest["splits"] == {"train": 256, eval_table("train"): 100}
