"""Bad input fails fast and alone; resubmitting a finished experiment reuses its results."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support.harness import Stack, wait_for_checkpoint
from support.specs import LONG, tiny_run

from bert_eval.temporal.history import activity_attempts

pytestmark = pytest.mark.integration


def test_failed_runs_do_not_fail_their_siblings_and_fail_fast(
    served: Stack, tiny_model_dir: Path, tmp_path: Path
) -> None:
    no_label = tmp_path / "no-label"
    no_label.mkdir()
    (no_label / "train.tsv").write_text("sentence\ttarget\na\t0\nb\t1\n")
    (no_label / "validation.tsv").write_text("sentence\ttarget\nc\t1\n")
    runs = [
        tiny_run(tiny_model_dir, "good"),
        {**tiny_run(tiny_model_dir, "bad-model"), "model": str(tmp_path / "no-such-model")},
        {**tiny_run(tiny_model_dir, "bad-dataset"), "dataset": {"path": str(no_label)}},
    ]
    started = time.monotonic()
    result = served.run_experiment({"experiment_id": "mixed", "runs": runs})
    by_id = {r.run_id: r for r in result.runs}
    assert by_id["good"].status == "completed" and by_id["good"].metrics
    assert by_id["bad-model"].status == "failed"
    assert "no-such-model" in by_id["bad-model"].error and "does not exist" in by_id["bad-model"].error
    assert by_id["bad-dataset"].status == "failed"
    assert "no label column" in by_id["bad-dataset"].error
    assert time.monotonic() - started < 120
    # Non-retryable: the failing activity ran exactly once (no retry storm).
    assert asyncio.run(_attempts(served, "train-bad-model", "fine_tune")) == [1]
    # The coordinator snapshots each run (3 runs, one attempt each); the bad dataset's run never starts training.
    assert asyncio.run(_attempts(served, "experiment-mixed", "snapshot_dataset")) == [1, 1, 1]
    assert not asyncio.run(_workflow_exists(served, "train-bad-dataset"))
    # Whoever asks for the failed run's model later is told it failed, and why (not "still training").
    from bert_eval.core.storage.layout import RunLayout
    from bert_eval.core.storage.rundir import trained_summary

    with pytest.raises(
        ValueError, match=r"run bad-model: training has not finished .*: it failed \(attempt 1: .*does not exist"
    ):
        trained_summary(RunLayout(served.runs_dir, "bad-model"))


async def _attempts(stack: Stack, workflow_id: str, activity_type: str) -> list[int]:
    return await activity_attempts(await stack.client(), workflow_id, activity_type)


async def _workflow_exists(stack: Stack, workflow_id: str) -> bool:
    from temporalio.service import RPCError

    try:
        await (await stack.client()).get_workflow_handle(workflow_id).describe()
    except RPCError:
        return False
    return True


def test_resubmitting_a_finished_experiment_reuses_results(served: Stack, tiny_model_dir: Path) -> None:
    experiment = {"experiment_id": "again", "runs": [tiny_run(tiny_model_dir, "once")]}
    first = served.run_experiment(experiment)
    model_file = served.runs_dir / "runs" / "once" / "model" / "model.safetensors"
    mtime = model_file.stat().st_mtime_ns
    second = served.run_experiment(experiment)
    [a], [b] = first.runs, second.runs
    assert a.status == b.status == "completed"
    assert not a.reused and b.reused
    assert a.metrics == b.metrics and a.training.steps == b.training.steps
    assert model_file.stat().st_mtime_ns == mtime  # nothing was trained or written again


def test_cli_rejects_bad_input_before_submitting_and_writes_json(
    served: Stack, tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = served.env()
    existing = sorted(served.runs_dir.rglob("*"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"runs": [{**tiny_run(tiny_model_dir, "x"), "run_id": "../escape"}]}))
    started = time.monotonic()
    rejected = subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(bad)], env=env, capture_output=True, text=True
    )
    assert rejected.returncode == 2 and "invalid run_id '../escape'" in rejected.stderr
    assert time.monotonic() - started < 30
    assert sorted(served.runs_dir.rglob("*")) == existing  # nothing written

    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"experiment_id": "cli", "runs": [tiny_run(tiny_model_dir, "cli-run")]}))
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(good), "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    [record] = json.loads(out.read_text())
    assert record["run_id"] == "cli-run" and record["status"] == "completed"
    assert {"steps", "final_loss", "resumes"} <= set(record["training"])
    assert set(record["metrics"]) == {"accuracy", "f1", "mcc"}
    assert "cli-run" in done.stdout + done.stderr

    # Same run id, different hyperparameters: refused before submission, existing files untouched.
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        yaml.safe_dump({"experiment_id": "cli2", "runs": [tiny_run(tiny_model_dir, "cli-run", learning_rate=1e-4)]})
    )
    refused = subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(changed)], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "already holds results of a run with a different" in refused.stderr

    status = subprocess.run(
        [sys.executable, "-m", "bert_eval", "status", "cli-run"], env=env, capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr
    assert "train-cli-run" in status.stdout and "eval-cli-run-validation" in status.stdout

    # --no-wait prints the ids and returns; `status <experiment>` shows the runs.
    queued = subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(good), "--no-wait"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert queued.returncode == 0, queued.stderr
    assert "experiment cli: workflow experiment-cli" in queued.stdout and "run cli-run" in queued.stdout
    experiment_status = subprocess.run(
        [sys.executable, "-m", "bert_eval", "status", "cli"], env=env, capture_output=True, text=True, timeout=60
    )
    assert experiment_status.returncode == 0, experiment_status.stderr
    assert "cli-run" in experiment_status.stdout
    unknown = subprocess.run(
        [sys.executable, "-m", "bert_eval", "status", "nope"], env=env, capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 1 and "no experiment or run 'nope'" in unknown.stderr


def test_a_run_already_training_elsewhere_is_reported_not_trained_twice(served: Stack, tiny_model_dir: Path) -> None:
    run = tiny_run(tiny_model_dir, "shared-run", **LONG)
    first = served.run_in_background({"experiment_id": "first", "runs": [run]})
    wait_for_checkpoint(served.runs_dir, "shared-run")
    [second] = served.run_experiment({"experiment_id": "second", "runs": [run]}).runs
    assert second.status == "failed"
    assert "already being processed by another submission (workflow train-shared-run)" in second.error
    [original] = first.result().runs
    assert original.status == "completed" and original.training.resumes == 0
