"""A search through the real workers: trials sampled by Optuna in an activity, ASHA on checkpoints, the
held-out objective, resubmission reusing every trial, and bad search input refused by the coordinator."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.harness import Stack, result_across_outages
from support.specs import tiny_run
from temporalio.client import WorkflowFailureError

from bert_eval.cli import _json_records
from bert_eval.core.search.asha import TrialState
from bert_eval.core.storage.layout import RunLayout
from bert_eval.experiment import parse_experiment
from bert_eval.spec import Experiment, RunSpec, SearchSpec, TaskType
from bert_eval.temporal.failures import root_cause
from bert_eval.temporal.names import coordinator_workflow_id
from bert_eval.temporal.submit import start_experiment

pytestmark = pytest.mark.integration


def search_experiment(
    model_dir: Path, experiment_id: str, *, trials: int = 6, concurrent: int = 2, **search: object
) -> dict:
    """A tiny-BERT template on 200 SST-2 rows (40 held out): 20 steps, rungs at 3, 9 and 20 steps."""
    template = tiny_run(
        model_dir,
        "template",
        max_train_samples=200,
        batch_size=16,
        epochs=2,
        checkpoint_every_steps=None,
        checkpoint_every_seconds=None,
        eval_samples=64,
    )
    template.pop("run_id")
    return {
        "experiment_id": experiment_id,
        "defaults": template,
        "search": {
            "space": {
                "train.learning_rate": {"loguniform": [1.0e-4, 3.0e-3]},
                "train.warmup_ratio": {"uniform": [0.0, 0.2]},
            },
            "sampler": "tpe",
            "trials": trials,
            "max_concurrent": concurrent,
            "seed": 3,
            "objective": {"metric": "accuracy", "mode": "max", "split": "search", "holdout": 0.2},
            "scheduler": {"type": "asha", "min_steps": 3, "reduction_factor": 3},
            **search,
        },
    }


def test_an_asha_search_promotes_the_top_third_resumes_from_rung_checkpoints_and_is_reused(
    served: Stack, tiny_model_dir: Path
) -> None:
    result = served.run_experiment(search_experiment(tiny_model_dir, "asha-basic"))
    search = result.search
    assert search is not None and search.finished and search.rungs == [3, 9, 20]
    trials = search.trials
    assert [t.trial for t in trials] == list(range(6)) and len({json.dumps(t.params) for t in trials}) == 6
    # η = 3 over 6 trials, promoted as results come (Algorithm 2): a trial goes to rung 1 when it ranks in
    # the top floor(n/3) of the first n rung-0 results for some n (ties ranked by the slice's loss, so a tied
    # trial may go either way); two go up at least, and those not promoted further are stopped.
    rung0 = [o for t in trials if (o := t.objectives[0]) is not None]
    assert len(rung0) == 6

    def could_go_up(j: int) -> bool:
        return any(sum(o > rung0[j] for o in rung0[:n]) < n // 3 for n in range(max(j + 1, 3), 7))

    promoted = [t.trial for t in trials if t.rung >= 1]
    assert len(promoted) >= 2 and all(could_go_up(j) for j in promoted), (rung0, promoted)
    completed = [t for t in trials if t.state is TrialState.completed]
    assert completed and all(t.steps == 20 and t.metrics and "accuracy" in t.metrics for t in completed)
    assert all(t.state is TrialState.stopped for t in trials if t.rung < 2)
    top = max(t.objective for t in completed if t.objective is not None)
    assert search.best in {t.run_id for t in completed if t.objective == top}  # ties: the lower slice loss
    best = next(t for t in completed if t.run_id == search.best)
    for trial in trials:
        run_dir = served.runs_dir / "runs" / trial.run_id
        # Each rung trained once (fine_tune calls), the next resuming from the previous rung's checkpoint.
        assert RunLayout(served.runs_dir, trial.run_id).journal.fine_tune_calls() == trial.rung + 1
        assert (
            sorted(int(p.stem.split("-")[1]) for p in (run_dir / "rungs").glob("step-*.json"))
            == search.rungs[: trial.rung + 1]
        )
        if trial.state is TrialState.stopped:
            assert [p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")] == [f"checkpoint-{trial.steps}"]
        spec = RunSpec.model_validate(json.loads((run_dir / "spec.json").read_text())["spec"])
        assert spec.holdout is not None and spec.holdout.fraction == 0.2
        assert spec.train.learning_rate == pytest.approx(trial.params["train.learning_rate"])
    summary = json.loads((served.runs_dir / "runs" / best.run_id / "training-summary.json").read_text())["summary"]
    assert summary["resumed_from_steps"] == [3, 9]  # the completed trial resumed from each rung's checkpoint

    # `status` shows the leaderboard; `--json` writes one record per trial.
    shown = subprocess.run([sys.executable, "-m", "bert_eval", "status", "asha-basic"], env=served.env(COLUMNS="200"),
                           capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert (
        "search asha-basic: 6 trials" in shown.stdout
        and f"{best.trial} *" in shown.stdout
        and "stopped" in shown.stdout
    )
    records = _json_records(result)
    assert [r["trial"] for r in records] == list(range(6)) and sum(r["best"] for r in records) == 1
    assert {"params", "rung", "state", "objective", "metrics"} <= set(records[0])

    # Resubmitted: the same trials and decisions, nothing trained again.
    again = served.run_experiment(search_experiment(tiny_model_dir, "asha-basic"))
    assert again.search is not None
    assert [t.model_dump(exclude={"train_seconds"}) for t in again.search.trials] == [
        t.model_dump(exclude={"train_seconds"}) for t in trials
    ]
    assert again.search.promotions == search.promotions and again.search.best == search.best
    assert all(t.train_seconds == 0 for t in again.search.trials)
    assert all(RunLayout(served.runs_dir, t.run_id).journal.fine_tune_calls() == t.rung + 1 for t in trials)


def test_a_search_the_data_cannot_support_is_refused_by_the_coordinator(served: Stack, tiny_model_dir: Path) -> None:
    """Another client's submission (no file checks): the coordinator refuses it once the data is read."""
    document = search_experiment(tiny_model_dir, "asha-regression")
    template = RunSpec.model_validate({**document["defaults"], "run_id": "template"})
    too_long = SearchSpec.model_validate({**document["search"], "scheduler": {"type": "asha", "min_steps": 500}})
    with pytest.raises(WorkflowFailureError) as refused:
        served.run_experiment(Experiment(experiment_id="asha-too-long", runs=(template,), search=too_long))
    assert (
        "search.scheduler.min_steps: 500 is not below the shortest trial's budget of 20 steps (160 training rows)"
        in root_cause(refused.value)
    )
    assert not (served.runs_dir / "runs" / "asha-too-long-t0000").exists()  # refused before any trial
    many_rows = template.model_copy(update={"train": template.train.model_copy(update={"max_train_samples": 30})})
    with pytest.raises(WorkflowFailureError) as refused:
        served.run_experiment(
            Experiment(
                experiment_id="asha-few-rows", runs=(many_rows,), search=SearchSpec.model_validate(document["search"])
            )
        )
    assert "30 selected rows: too few to hold out a search slice" in root_cause(refused.value)
    regression = template.model_copy(
        update={"dataset": template.dataset.model_copy(update={"task": TaskType.regression})}
    )
    with pytest.raises(WorkflowFailureError) as refused:
        served.run_experiment(
            Experiment(
                experiment_id="asha-regression",
                runs=(regression,),
                search=SearchSpec.model_validate(document["search"]),
            )
        )
    assert "search.objective.metric: regression runs report pearson, spearman, mse, not 'accuracy'" in root_cause(
        refused.value
    )


async def history_lengths(stack: Stack, workflow_id: str) -> list[int]:
    """The event count of every run of a workflow (its continue-as-new chain)."""
    client = await stack.client()
    runs = [execution async for execution in client.list_workflows(f'WorkflowId = "{workflow_id}"')]
    return [len((await client.get_workflow_handle(workflow_id, run_id=e.run_id).fetch_history()).events) for e in runs]


@pytest.mark.slow
def test_a_search_survives_kills_and_a_server_restart_with_the_decisions_of_an_undisturbed_one(
    served: Stack, tmp_path: Path, data_dir: Path, tiny_model_dir: Path
) -> None:
    """12 trials, ASHA: undisturbed on the module's workers; then again, on a server of its own, with the
    coordinator continuing as new every ~200 events, while the eval worker (which hosts the coordinator)
    and the training worker are each SIGKILLed 3 times and the Temporal server is killed and restarted
    on its database once."""
    document = search_experiment(tiny_model_dir, "asha-durable", trials=12, concurrent=3)
    started = time.monotonic()
    calm = served.run_experiment(document, heartbeat_timeout_s=5)
    assert calm.search is not None and calm.search.continued == 0
    calm_s = time.monotonic() - started

    stack = Stack.start(tmp_path / "storm", data_dir, db_file=tmp_path / "temporal.db")
    try:
        pace = {"step_pace_s": 0.15}  # kills land mid-rung: a rung of 3 steps trains for at least 0.45 s
        stack.start_workers("training", "eval", **pace)
        experiment = parse_experiment(document)

        async def submit() -> None:
            settings = stack.settings(heartbeat_timeout_s=5, search_history_limit=200)
            await start_experiment(await stack.client(), experiment, settings)

        asyncio.run(submit())
        measured = lambda: len(list(stack.runs_dir.glob("runs/*/rungs/step-*.json")))  # noqa: E731
        done = []
        for target in ("training", "eval", "server", "training", "eval", "training", "eval"):
            seen = measured()
            deadline = time.monotonic() + 180
            while measured() < seen + 2 and time.monotonic() < deadline:
                time.sleep(0.2)
            if target == "server":
                stack.kill_server()
                time.sleep(1)
                stack.start_server()
            else:
                [worker] = [w for w in stack.workers if w.kind == target and w.process.poll() is None]
                worker.kill()
                stack.start_worker(target, wait=False, **pace)
            done.append((target, measured(), round(time.monotonic() - started)))
        storm = asyncio.run(result_across_outages(stack, coordinator_workflow_id("asha-durable"), timeout_s=600))
        lengths = asyncio.run(history_lengths(stack, coordinator_workflow_id("asha-durable")))
    finally:
        stack.close()
    assert measured() == 17 and done[-1][1] < 17, f"every kill must land during the search: {done}"

    assert storm.search is not None and calm.search is not None and storm.search.continued >= 1
    # Each run of the coordinator stops starting work past the limit; what was in flight when it stopped
    # (rungs, samples that no longer wait, retries after kills) ends it, within twice the limit.
    assert len(lengths) == storm.search.continued + 1 and max(lengths) <= 2 * 200, lengths
    same = {"train_seconds"}
    assert [t.model_dump(exclude=same) for t in storm.search.trials] == [
        t.model_dump(exclude=same) for t in calm.search.trials
    ]
    assert storm.search.promotions == calm.search.promotions and storm.search.best == calm.search.best
    for trial in storm.search.trials:  # none lost, none trained twice: one fine_tune per rung it reached
        calls = [
            RunLayout(runs_dir, trial.run_id).journal.fine_tune_calls()
            for runs_dir in (stack.runs_dir, served.runs_dir)
        ]
        assert calls == [trial.rung + 1] * 2
    total = time.monotonic() - started
    print(
        f"\nsearch durability: undisturbed {calm_s:.0f}s; kills (target, rungs measured, s) {done}; all {total:.0f}s; "
        f"continued as new {storm.search.continued} times (histories {lengths}), best {storm.search.best}"
    )
