"""`bert-eval compare` on eval-only runs: their evaluation is the cell the coordinator evaluated them as
(`evals/<cell>/`, found through the cell's `runs/<run_id>.json`), and compares as a trained run's does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import Stack
from support.specs import tiny_run

pytestmark = pytest.mark.integration


def _compare(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bert_eval", "compare", *args, "--json"],
        env=stack.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_compare_reads_eval_only_runs_through_their_cells(stack: Stack, tiny_model_dir: Path) -> None:
    stack.start_workers("training", "eval")
    trained = [
        tiny_run(tiny_model_dir, "base", eval_samples=64),
        tiny_run(tiny_model_dir, "other", eval_samples=64, seed=7),
    ]
    evaluated = [
        {"run_id": f"{run_id}-eval", "model": {"run": run_id}, "dataset": "glue/sst2", "train": None,
         "eval": {"split": "validation", "max_eval_samples": 64}}
        for run_id in ("base", "other")
    ]  # fmt: skip
    result = stack.run_experiment({"experiment_id": "eval-only-compare", "runs": [*trained, *evaluated]})
    assert [run.status for run in result.runs] == ["completed"] * 4, [run.error for run in result.runs]
    assert not (stack.runs_dir / "runs" / "base-eval").exists()  # an eval-only run has no run directory

    # Eval-only against eval-only, and against a trained run: the same numbers as the trained runs' comparison
    # (the same models on the same rows).
    done = {
        pair: _compare(stack, *pair)
        for pair in (("base", "other"), ("base-eval", "other-eval"), ("base-eval", "other"))
    }
    for pair, reply in done.items():
        assert reply.returncode == 0, (pair, reply.stderr)
    found = {pair: json.loads(reply.stdout) for pair, reply in done.items()}
    reference = found[("base", "other")]
    for pair in (("base-eval", "other-eval"), ("base-eval", "other")):
        assert found[pair]["kind"] == "runs" and found[pair]["examples"] == 64
        assert (found[pair]["a"], found[pair]["b"]) == pair
        assert found[pair]["difference"] == reference["difference"], pair

    # Its cell's predictions altered: resubmitting evaluates it again, and says so for that run.
    from bert_eval.core.storage.layout import CellLayout

    [record] = CellLayout.runs_evaluated_as(stack.runs_dir, "base-eval", "validation")
    (record.parent.parent / "predictions.parquet").write_bytes(b"not the predictions")
    again = stack.run_experiment({"experiment_id": "eval-only-compare", "runs": [*trained, *evaluated]})
    assert [(run.reused, run.evaluated_again is not None) for run in again.runs] == [
        (True, False), (True, False), (False, True), (True, False)
    ]  # fmt: skip
    assert again.runs[2].evaluated_again.startswith(f"its evaluation cell {record.parent.parent} failed verification")
    assert again.runs[2].metrics == result.runs[2].metrics
    assert json.loads(_compare(stack, "base-eval", "other-eval").stdout)["difference"] == reference["difference"]

    # A run id nothing recorded: named, one line, exit 2.
    missing = _compare(stack, "nobody", "base-eval")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    assert missing.stderr.startswith("error: run nobody has no evaluation of split 'validation'")
