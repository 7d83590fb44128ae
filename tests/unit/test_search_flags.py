"""When a search has nothing to decide: `search_flags` (services/bert_eval/search.py) and the slice's own
measurements it reads (`core/search/rungs.py`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, log_loss

from bert_eval.core.records import TaskType
from bert_eval.core.search.rungs import constant_scores, slice_loss
from bert_eval.search import SEPARABLE_GAP, search_flags, separable_gap


def _kinds(**kwargs: object) -> list[str]:
    defaults: dict[str, object] = {
        "metric": "accuracy",
        "maximize": True,
        "slice_rows": 2000,
        "constant": 0.5,
        "best": None,
    }
    return [flag.kind for flag in search_flags(**{**defaults, **kwargs})]  # type: ignore[arg-type]


def test_a_search_whose_trials_each_predict_one_class_says_so_and_what_to_change() -> None:
    """Six trials, MCC: every trial scores 0.0 at every rung (one class predicted); trial 0 'wins'."""
    objectives = [[0.0, 0.0, 0.0]] + [[0.0]] * 5
    flags = search_flags(
        metric="mcc",
        maximize=True,
        slice_rows=120,
        objectives=objectives,
        classes=[[1, 1, 1]] + [[1]] * 5,
        constant=0.0,
        best=0,
    )
    by_kind = {flag.kind: flag.message for flag in flags}
    assert set(by_kind) == {"small-slice", "one-class", "tied", "constant-wins"}
    assert "every trial predicts one class" in by_kind["one-class"] and "learning-rate range" in by_kind["one-class"]
    assert "all 6 trials at rung 0 scored mcc 0.0000" in by_kind["tied"]
    assert (
        "constant prediction scores mcc 0.0000" in by_kind["constant-wins"]
        and "another objective" in by_kind["constant-wins"]
    )


def test_an_f1_won_by_predicting_every_row_positive_is_flagged() -> None:
    assert "constant-wins" in _kinds(
        metric="f1", objectives=[[0.78, 0.8], [0.6]], classes=[[2, 1], [2]], constant=0.8, best=0
    )
    assert "constant-wins" not in _kinds(
        metric="f1", objectives=[[0.78, 0.86], [0.6]], classes=[[2, 2], [2]], constant=0.8, best=0
    )


def test_a_minimized_objective_is_flagged_when_no_better_than_the_labels_mean() -> None:
    kinds = _kinds(
        metric="mse", maximize=False, objectives=[[0.30], [0.25]], classes=[[None], [None]], constant=0.25, best=1
    )
    assert kinds == ["constant-wins"]


def test_trials_within_the_slices_noise_are_flagged_and_a_clear_spread_is_not() -> None:
    # 2,000 rows: 95% separates about 3 points near 80%; 0.80-0.81 is noise, 0.70-0.85 is not.
    assert _kinds(objectives=[[0.80], [0.81], [0.805]], classes=[[2]] * 3) == ["within-noise"]
    assert _kinds(objectives=[[0.70], [0.85], [0.78]], classes=[[2]] * 3) == []


def test_only_some_trials_predicting_one_class_names_them() -> None:
    flags = search_flags(
        metric="accuracy",
        maximize=True,
        slice_rows=2000,
        objectives=[[0.5], [0.8], [0.5]],
        classes=[[1], [2], [1]],
        constant=0.5,
        best=None,
    )
    assert [f.message.split(" predict")[0] for f in flags if f.kind == "one-class"] == ["trials 0, 2"]


def test_a_small_slice_names_the_rows_it_would_need() -> None:
    [flag] = search_flags(
        metric="accuracy", maximize=True, slice_rows=60, objectives=[], classes=[], constant=None, best=None
    )
    need = math.ceil(2 * 0.25 * (1.959963984540054 / SEPARABLE_GAP) ** 2)
    assert flag.kind == "small-slice" and f"{need} rows" in flag.message and "60 rows" in flag.message
    assert separable_gap(need) <= SEPARABLE_GAP < separable_gap(need - 1)


def test_the_slice_loss_is_the_log_loss_of_the_softmax() -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 3)), rng.integers(0, 3, size=50)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert slice_loss(logits, labels, task=TaskType.classification) == pytest.approx(
        log_loss(labels, probabilities, labels=[0, 1, 2])
    )
    scores, targets = rng.normal(size=(20, 1)), rng.normal(size=20)
    assert slice_loss(scores, targets, task=TaskType.regression) == pytest.approx(
        np.mean((scores[:, 0] - targets) ** 2)
    )


def test_a_constant_predictions_scores_are_the_best_single_class() -> None:
    labels = np.array([1] * 80 + [0] * 20)
    scores = constant_scores(labels, task=TaskType.classification, num_labels=2)
    assert scores["accuracy"] == 0.8 and scores["mcc"] == 0.0
    assert scores["f1"] == pytest.approx(f1_score(labels, np.ones(100, dtype=int)))


def test_the_leaderboard_and_the_json_records_carry_the_flags() -> None:
    from rich.console import Console

    from bert_eval.cli import _json_records, _leaderboard
    from bert_eval.core.search.asha import TrialState
    from bert_eval.temporal.payloads import ExperimentResult, SearchOutcome, SearchTrial

    flags = search_flags(
        metric="mcc",
        maximize=True,
        slice_rows=1000,
        objectives=[[0.0], [0.0]],
        classes=[[1], [1]],
        constant=0.0,
        best=None,
    )
    trials = [
        SearchTrial(trial=i, run_id=f"s-t{i}", params={"train.learning_rate": 1e-3}, rung=0, steps=4,
                    state=TrialState.stopped, objective=0.0, objectives=[0.0], predicted_classes=1)
        for i in range(2)
    ]  # fmt: skip
    outcome = SearchOutcome(experiment_id="s", metric="mcc", maximize=True, rungs=[4], trials=trials, flags=flags)
    console = Console(width=200, record=True)
    console.print(_leaderboard(outcome))
    shown = console.export_text()
    assert "! one-class: every trial predicts one class" in shown and "! tied: all 2 trials at rung 0" in shown
    records = _json_records(ExperimentResult(experiment_id="s", runs=[], search=outcome))
    assert [f["kind"] for f in records[0]["search_flags"]] == ["one-class", "tied", "constant-wins"]  # type: ignore[index]


def _search_experiment(max_train_samples: int | None, holdout: float, metric: str = "accuracy") -> object:
    from bert_eval.experiment import parse_experiment

    train = {"epochs": 1} if max_train_samples is None else {"epochs": 1, "max_train_samples": max_train_samples}
    return parse_experiment({
        "experiment_id": "slice",
        "runs": [{"model": "tiny", "dataset": "glue/sst2", "train": train}],
        "search": {
            "trials": 4,
            "space": {"train.learning_rate": {"loguniform": [1.0e-5, 1.0e-3]}},
            "objective": {"metric": metric, "holdout": holdout},
            "scheduler": {"type": "asha", "min_steps": 2},
        },
    })  # fmt: skip


@pytest.mark.parametrize(
    ("rows", "holdout", "metric", "flagged"),
    [
        (400, 0.2, "accuracy", True),  # 80 rows: 15.3% apart
        (20000, 0.1, "accuracy", False),  # 2,000 rows: 3.1% apart
        (400, 0.2, "f1", True),
        (None, 0.2, "accuracy", False),  # the whole dataset: the coordinator flags it once the rows are known
    ],
)
def test_a_slice_too_small_is_flagged_before_submitting(
    rows: int | None, holdout: float, metric: str, flagged: bool
) -> None:
    from bert_eval.search import submission_flags

    experiment = _search_experiment(rows, holdout, metric)
    flags = submission_flags(experiment.search, experiment.runs[0])  # type: ignore[attr-defined]
    assert [f.kind for f in flags] == (["small-slice"] if flagged else [])
    if flagged:
        assert f"{round(rows * holdout)} rows" in flags[0].message  # type: ignore[operator]
