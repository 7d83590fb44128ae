"""A search through the real workers: trials sampled by Optuna in an activity, ASHA on checkpoints, the
held-out objective, resubmission reusing every trial, and bad search input refused by the coordinator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.specs import tiny_run
from temporalio.client import WorkflowFailureError

from bert_eval.core.asha import TrialState
from bert_eval.core.journal import RunJournal
from bert_eval.core.layout import RunLayout
from bert_eval.spec import Experiment, RunSpec, SearchSpec
from bert_eval.temporal.failures import root_cause

from .harness import Stack

pytestmark = pytest.mark.integration


def search_experiment(model_dir: Path, experiment_id: str, *, trials: int = 6, concurrent: int = 2, **search: object) -> dict:
    """A tiny-BERT template on 200 SST-2 rows (40 held out): 20 steps, rungs at 3, 9 and 20 steps."""
    template = tiny_run(model_dir, "template", max_train_samples=200, batch_size=16, epochs=2, checkpoint_every_steps=None, eval_samples=64)
    template.pop("run_id")
    return {
        "experiment_id": experiment_id,
        "defaults": template,
        "search": {
            "space": {"train.learning_rate": {"loguniform": [1.0e-4, 3.0e-3]}, "train.warmup_ratio": {"uniform": [0.0, 0.2]}},
            "sampler": "tpe",
            "trials": trials,
            "max_concurrent": concurrent,
            "seed": 3,
            "objective": {"metric": "accuracy", "mode": "max", "split": "search", "holdout": 0.2},
            "scheduler": {"type": "asha", "min_steps": 3, "reduction_factor": 3},
            **search,
        },
    }


def fine_tune_calls(runs_dir: Path, run_id: str) -> int:
    """fine_tune activities that ran for a run (a retry after a kill is the same call: attempt > 1)."""
    return sum(1 for e in RunJournal(RunLayout(runs_dir, run_id).journal_file).of_kind("attempt") if e.get("attempt") == 1)


def test_an_asha_search_promotes_the_top_third_resumes_from_rung_checkpoints_and_is_reused(served: Stack, tiny_model_dir: Path) -> None:
    result = served.run_experiment(search_experiment(tiny_model_dir, "asha-basic"))
    search = result.search
    assert search is not None and search.finished and search.rungs == [3, 9, 20]
    trials = search.trials
    assert [t.trial for t in trials] == list(range(6)) and len({json.dumps(t.params) for t in trials}) == 6
    # η = 3 over 6 trials: two reach rung 1 (9 steps), and those not promoted further are stopped.
    assert [t.rung for t in trials].count(0) == 4
    completed = [t for t in trials if t.state is TrialState.completed]
    assert completed and all(t.steps == 20 and t.metrics and "accuracy" in t.metrics for t in completed)
    assert all(t.state is TrialState.stopped for t in trials if t.rung < 2)
    best = max(completed, key=lambda t: (t.objective, -t.trial))
    assert search.best == best.run_id
    for trial in trials:
        run_dir = served.runs_dir / "runs" / trial.run_id
        # Each rung trained once (fine_tune calls), the next resuming from the previous rung's checkpoint.
        assert fine_tune_calls(served.runs_dir, trial.run_id) == trial.rung + 1
        assert sorted(int(p.stem.split("-")[1]) for p in (run_dir / "rungs").glob("step-*.json")) == search.rungs[: trial.rung + 1]
        if trial.state is TrialState.stopped:
            assert [p.name for p in (run_dir / "checkpoints").glob("checkpoint-*")] == [f"checkpoint-{trial.steps}"]
        spec = RunSpec.model_validate(json.loads((run_dir / "spec.json").read_text())["spec"])
        assert spec.holdout is not None and spec.holdout.fraction == 0.2
        assert spec.train.learning_rate == pytest.approx(trial.params["train.learning_rate"])
    summary = json.loads((served.runs_dir / "runs" / best.run_id / "training-summary.json").read_text())["summary"]
    assert summary["resumed_from_steps"] == [3, 9]  # the completed trial resumed from each rung's checkpoint

    # Resubmitted: the same trials and decisions, nothing trained again.
    again = served.run_experiment(search_experiment(tiny_model_dir, "asha-basic"))
    assert again.search is not None
    assert [t.model_dump(exclude={"train_seconds"}) for t in again.search.trials] == [t.model_dump(exclude={"train_seconds"}) for t in trials]
    assert again.search.promotions == search.promotions and again.search.best == search.best
    assert all(t.train_seconds == 0 for t in again.search.trials)
    assert all(fine_tune_calls(served.runs_dir, t.run_id) == t.rung + 1 for t in trials)


def test_a_search_the_data_cannot_support_is_refused_by_the_coordinator(served: Stack, tiny_model_dir: Path) -> None:
    """Another client's submission (no file checks): the coordinator refuses it once the data is read."""
    document = search_experiment(tiny_model_dir, "asha-regression")
    template = RunSpec.model_validate({**document["defaults"], "run_id": "template"})
    too_long = SearchSpec.model_validate({**document["search"], "scheduler": {"type": "asha", "min_steps": 500}})
    with pytest.raises(WorkflowFailureError) as refused:
        served.run_experiment(Experiment(experiment_id="asha-too-long", runs=(template,), search=too_long))
    assert "search.scheduler.min_steps: 500 is not below the shortest trial's budget of 20 steps (160 training rows)" in root_cause(refused.value)
    assert not (served.runs_dir / "runs" / "asha-too-long-t0000").exists()  # refused before any trial
    many_rows = template.model_copy(update={"train": template.train.model_copy(update={"max_train_samples": 30})})
    with pytest.raises(WorkflowFailureError) as refused:
        served.run_experiment(Experiment(experiment_id="asha-few-rows", runs=(many_rows,), search=SearchSpec.model_validate(document["search"])))
    assert "30 selected rows: too few to hold out a search slice" in root_cause(refused.value)
    regression = template.model_copy(update={"dataset": template.dataset.model_copy(update={"task": "regression"})})
    with pytest.raises(WorkflowFailureError) as refused:
        served.run_experiment(Experiment(experiment_id="asha-regression", runs=(regression,), search=SearchSpec.model_validate(document["search"])))
    assert "search.objective.metric: regression runs report pearson, spearman, mse, not 'accuracy'" in root_cause(refused.value)
