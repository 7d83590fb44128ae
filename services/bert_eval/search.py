"""How a search (`Experiment.search`, spec.py) becomes trials and rungs: plain functions of the spec.

Trial `i` is the experiment's one run (the template) with the sampled parameters set (`trial_spec`), trained
on the template's training rows less a held-out slice (`RunSpec.holdout`), on which the objective is
measured; the experiment's eval split is never searched on. With ASHA a trial trains in rungs of
`min_steps * reduction_factor**k` steps, then its full budget (`rung_steps`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar

from bert_eval.spec import (
    SEARCH_METRICS,
    SEARCH_MIN_HOLDOUT_ROWS,
    SEARCHABLE_FIELDS,
    Holdout,
    RunSpec,
    Scheduler,
    SearchSpec,
    TaskType,
    TrainHyperparameters,
    normalize_id,
)

__all__ = ["check_search", "holdout_rows", "leaderboard", "max_steps", "rung_steps", "search_holdout", "trial_id", "trial_spec"]


def check_search(search: SearchSpec, template: RunSpec, *, task: TaskType | None, train_rows: int | None) -> None:
    """What can be checked once the task and the number of selected training rows are known: before submitting
    when the file gives them, in the coordinator once the data is read. ValueError naming the field."""
    if task is not None and search.objective.metric not in SEARCH_METRICS[task]:
        raise ValueError(
            f"search.objective.metric: {task.value} runs report {', '.join(SEARCH_METRICS[task])}, not {search.objective.metric!r}"
        )
    if train_rows is None:
        return
    held = holdout_rows(train_rows, search.objective.holdout)
    if held < SEARCH_MIN_HOLDOUT_ROWS or train_rows - held < SEARCH_MIN_HOLDOUT_ROWS:
        raise ValueError(
            f"search.objective.holdout: {train_rows} training rows cannot give a search slice of {SEARCH_MIN_HOLDOUT_ROWS}+ "
            f"rows and keep {SEARCH_MIN_HOLDOUT_ROWS}+ to train on (holdout {search.objective.holdout} gives {held}); "
            "raise train.max_train_samples or objective.holdout"
        )
    if search.scheduler.type == "asha":
        shortest = min(max_steps(trial.train, train_rows - held) for trial in _extreme_trials(search, template))
        if search.scheduler.min_steps >= shortest:
            raise ValueError(
                f"search.scheduler.min_steps: {search.scheduler.min_steps} is not below the shortest trial's budget of "
                f"{shortest} steps ({train_rows - held} training rows); lower min_steps or train longer"
            )


def _extreme_trials(search: SearchSpec, template: RunSpec) -> list[RunSpec]:
    """The template with each searched parameter at each of its ends (the others as in the template)."""
    out = [template]
    for path, distribution in search.space.items():
        for end in distribution.ends():
            out.append(trial_spec(template, {path: end}, run_id=template.id))
    return out


def holdout_rows(train_rows: int, fraction: float) -> int:
    """Rows of the search slice carved from `train_rows` selected training rows."""
    return max(1, round(train_rows * fraction))


def search_holdout(search: SearchSpec) -> Holdout:
    return Holdout(fraction=search.objective.holdout, seed=search.seed)


def max_steps(train: TrainHyperparameters, train_rows: int) -> int:
    """The optimizer steps a run trains for, as the Trainer counts them: batches per epoch (the last one
    partial) times the epochs, rounded up."""
    per_epoch = max(math.ceil(train_rows / train.batch_size), 1)
    return max(math.ceil(train.epochs * per_epoch), 1)


def rung_steps(scheduler: Scheduler, budget: int) -> tuple[int, ...]:
    """A trial's rungs: min_steps * reduction_factor**k below its budget, then the budget itself."""
    if scheduler.type == "none":
        return (budget,)
    rungs, step = [], scheduler.min_steps
    while step < budget:
        rungs.append(step)
        step *= scheduler.reduction_factor
    return (*rungs, budget)


def trial_id(search_id: str, index: int) -> str:
    return normalize_id(f"{search_id[:52].rstrip('-._')}-t{index:04d}")


def trial_spec(template: RunSpec, params: dict[str, Any], *, run_id: str, holdout: Holdout | None = None) -> RunSpec:
    """The template with `params` (dotted `train.*` paths) set, under `run_id`."""
    train = template.train.model_dump()
    for path, value in params.items():
        name = path.removeprefix("train.")
        train[name] = int(value) if SEARCHABLE_FIELDS[name] else float(value)
    update: dict[str, Any] = {"run_id": run_id, "train": TrainHyperparameters.model_validate(train), "config": None}
    if holdout is not None:
        update["holdout"] = holdout
    return template.model_copy(update=update)


class _Ranked(Protocol):
    @property
    def trial(self) -> int: ...
    @property
    def rung(self) -> int: ...
    @property
    def objective(self) -> float | None: ...


Ranked = TypeVar("Ranked", bound=_Ranked)


def leaderboard(trials: Iterable[Ranked], *, maximize: bool) -> list[Ranked]:
    """Trials in leaderboard order: highest rung reached first, then the best objective there, trials
    without an objective last, ties by trial index (`bert-eval status` and the report)."""
    sign = -1 if maximize else 1
    return sorted(trials, key=lambda t: (t.objective is None, -t.rung, sign * (t.objective or 0.0), t.trial))
