"""An experiment id is a claim on one set of runs, checked against the coordinator Temporal holds.

No workers: the coordinator stays running (nobody polls its queue), which is the case where attaching to
it with another file's contents would print the new runs and return the old results.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import Stack

pytestmark = pytest.mark.integration


def _submit(stack: Stack, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(path), "--no-wait", *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _file(tmp_path: Path, name: str, runs: list[dict[str, object]]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps({"experiment_id": "claimed", "runs": runs}))  # JSON is YAML
    return path


def _run(run_id: str, **train: object) -> dict[str, object]:
    return {"run_id": run_id, "model": "m", "dataset": "glue/sst2", "train": {"epochs": 1, **train}}


def test_a_running_experiment_is_attached_to_only_with_the_same_runs(stack: Stack, tmp_path: Path) -> None:
    first = _submit(stack, _file(tmp_path, "first", [_run("a"), _run("b")]))
    assert first.returncode == 0, first.stderr
    assert "experiment claimed: workflow" in first.stdout

    again = _submit(stack, _file(tmp_path, "again", [_run("a"), _run("b")]))
    assert again.returncode == 0, again.stderr  # the same contents: attaches

    for name, runs, difference in (
        ("added", [_run("a"), _run("b"), _run("c")], "only in this file: c"),
        ("changed", [_run("a"), _run("b", learning_rate=1e-4)], "changed: b"),
    ):
        refused = _submit(stack, _file(tmp_path, name, runs))
        assert refused.returncode == 2, refused.stderr
        message = refused.stderr
        assert message.count("\n") == 1 and "Traceback" not in message, message
        assert message.startswith("error: experiment claimed is running with different runs (workflow ")
        assert difference in message and "wait for it to finish" in message, message

    # --replace does not take over a running experiment either.
    replaced = _submit(stack, _file(tmp_path, "replace", [_run("z")]), "--replace")
    assert replaced.returncode == 2 and "is running with different runs" in replaced.stderr


def test_a_terminated_experiment_claims_nothing(stack: Stack, tmp_path: Path) -> None:
    first = _submit(stack, _file(tmp_path, "first", [_run("a")]))
    assert first.returncode == 0, first.stderr
    workflow_id = first.stdout.split("workflow ", 1)[1].split()[0]

    async def terminate() -> None:
        client = await stack.client()
        await client.get_workflow_handle(workflow_id).terminate("test: a submission given up")

    asyncio.run(terminate())
    # Only a running or completed coordinator claims its id: a corrected file may reuse it.
    fixed = _submit(stack, _file(tmp_path, "fixed", [_run("b")]))
    assert fixed.returncode == 0, fixed.stderr


def test_kept_predictions_that_are_gone_or_altered_are_evaluated_again(
    stack: Stack, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Resubmitting repairs a run whose kept predictions were deleted or replaced, instead of reusing a result
    that comparisons and intervals cannot read, and `run` says so per run (table, line and --json)."""
    from support.specs import tiny_run

    from bert_eval.compare import compare
    from bert_eval.core.storage.layout import RunLayout

    stack.start_workers("training", "eval")
    experiment = {
        "experiment_id": "repaired",
        "runs": [tiny_run(tiny_model_dir, "kept-a"), tiny_run(tiny_model_dir, "kept-b", seed=7)],
    }
    first = stack.run_experiment(experiment)
    assert [run.status for run in first.runs] == ["completed", "completed"]
    a, b = RunLayout(stack.runs_dir, "kept-a"), RunLayout(stack.runs_dir, "kept-b")
    a.predictions_file("validation").unlink()
    b.predictions_file("validation").write_bytes(b"not the predictions")
    with pytest.raises(ValueError, match="kept-a"):
        compare(stack.runs_dir, ["kept-a"], ["kept-b"])

    path, records = tmp_path / "repaired.yaml", tmp_path / "repaired.json"
    path.write_text(json.dumps(experiment))
    done = subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(path), "--json", str(records)],
        env=stack.env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads(records.read_text())
    assert [(run["status"], run["reused"]) for run in again] == [("completed", False), ("completed", False)]
    assert [run["metrics"] for run in again] == [run.metrics for run in first.runs]
    assert again[0]["training"]["steps"] == first.runs[0].training.steps
    missing, altered = (f"its kept predictions {p.predictions_file('validation')}" for p in (a, b))
    assert [run["evaluated_again"] for run in again] == [
        f"{missing} were missing",
        f"{altered} did not match the digest its evaluation recorded (altered)",
    ]
    assert f"repaired: run kept-a: {missing} were missing; evaluated again" in done.stdout
    assert (
        f"repaired: run kept-b: {altered} did not match the digest its evaluation recorded (altered); evaluated again"
        in done.stdout
    )
    assert compare(stack.runs_dir, ["kept-a"], ["kept-b"]).sentence  # readable again
    # A third submission finds the repaired files: reused, nothing to say.
    third = stack.run_experiment(experiment)
    assert [(run.reused, run.evaluated_again) for run in third.runs] == [(True, None), (True, None)]
    log = "".join(path.read_text() for path in stack.log_dir.glob("*eval*.log"))
    assert "kept predictions missing or not matching their digest" in log


def test_a_refusal_the_coordinator_finds_is_one_line_and_exit_2(
    stack: Stack, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The file cannot tell the data's task (no dataset.task): the coordinator refuses the objective once it has
    read the data, and `bert-eval run` prints its message, not the workflow failure's traceback."""
    from support.specs import tiny_run

    stack.start_workers("eval")
    template = tiny_run(tiny_model_dir, "template", max_train_samples=200, batch_size=16, checkpoint_every_steps=None)
    template.pop("run_id")
    document = {
        "experiment_id": "refused-objective",
        "defaults": template,
        "search": {
            "space": {"train.learning_rate": {"loguniform": [1.0e-4, 3.0e-3]}},
            "trials": 2,
            "objective": {"metric": "mse", "holdout": 0.2},
            "scheduler": {"type": "none"},
        },
    }
    path = tmp_path / "search.yaml"
    path.write_text(json.dumps(document))
    before = (
        sorted(p.relative_to(stack.runs_dir).as_posix() for p in (stack.runs_dir / "runs").rglob("*"))
        if (stack.runs_dir / "runs").exists()
        else []
    )
    done = subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(path)],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "WorkflowFailureError" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: invalid experiment: search.objective.metric: classification runs report accuracy, f1, mcc, not 'mse'"
    ], done.stderr[-3000:]
    after = (
        sorted(p.relative_to(stack.runs_dir).as_posix() for p in (stack.runs_dir / "runs").rglob("*"))
        if (stack.runs_dir / "runs").exists()
        else []
    )
    assert after == before  # refused before any trial
