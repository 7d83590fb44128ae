"""Where a worker runs its models: one thread per worker, so torch keeps one OpenMP pool per process."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from pathlib import Path

import pytest
import torch
from support.core import core_snapshot
from support.specs import core_spec
from temporalio.testing import ActivityEnvironment
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bert_eval.core.data.snapshot import SnapshotInput
from bert_eval.temporal import activities
from bert_eval.temporal.activities import EvalActivities
from bert_eval.temporal.payloads import EvalRunInput


def test_an_eval_worker_runs_evaluations_one_at_a_time_on_one_thread_beside_other_activities(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    ran: list[tuple[str, float, float]] = []  # (thread, started, ended) of each real evaluation
    real_evaluate = activities.evaluate

    def recorded(**kwargs: object):
        started = time.monotonic()
        result = real_evaluate(**kwargs)
        ran.append((threading.current_thread().name, started, time.monotonic()))
        return result

    monkeypatch.setattr(activities, "evaluate", recorded)
    # A classifier saved with its head, so every evaluation loads the same weights.
    model_dir = tmp_path / "classifier"
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=2).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(model_dir)
    eval_pool = EvalActivities(runs_dir=runs_dir, data_dir=data_dir, force_cpu=True)
    spec = core_spec(tiny_model_dir, "evaluated")
    snapshot = core_snapshot(spec, runs_dir, data_dir)
    requests = [
        EvalRunInput(
            experiment_id="threads",
            run_id=f"evaluated-{i}",
            model_dir=str(model_dir),
            snapshot=snapshot,
            request=spec.primary_eval,
        )
        for i in range(3)
    ]
    other_spec = core_spec(tiny_model_dir, "snapshotted", max_train_samples=64)

    async def go():
        environment = ActivityEnvironment()
        return await asyncio.gather(
            *(environment.run(eval_pool.evaluate_model, request) for request in requests),
            environment.run(eval_pool.snapshot_dataset, SnapshotInput.for_run(other_spec)),
        )

    *results, other_snapshot = asyncio.run(go())

    assert [r.run_id for r in results] == [r.run_id for r in requests]
    assert len({tuple(sorted(r.metrics.items())) for r in results}) == 1  # same model, same rows
    assert other_snapshot.snapshot_id != snapshot.snapshot_id
    assert len({thread for thread, _, _ in ran}) == 1 and ran[0][0].startswith("bert-eval-model")
    spans = sorted((started, ended) for _, started, ended in ran)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(spans)), spans
