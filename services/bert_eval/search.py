"""How a search (`Experiment.search`, spec.py) becomes trials and rungs: plain functions of the spec.

Trial `i` is the experiment's one run (the template) with the sampled parameters set (`trial_spec`), trained
on the template's training rows less a held-out slice (`RunSpec.holdout`), on which the objective is
measured; the experiment's eval split is never searched on. With ASHA a trial trains in rungs of
`min_steps * reduction_factor**k` steps, then its full budget (`rung_steps`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel

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

__all__ = [
    "CLASSIFICATION_OBJECTIVES",
    "SEPARABLE_GAP",
    "SearchFlag",
    "check_search",
    "holdout_rows",
    "leaderboard",
    "max_steps",
    "rung_steps",
    "search_flags",
    "search_holdout",
    "separable_gap",
    "small_slice_flag",
    "submission_flags",
    "trial_id",
    "trial_spec",
]

# The difference in accuracy a search slice should tell apart; a smaller slice is flagged with the rows it needs.
SEPARABLE_GAP = 0.05
# Objectives scored on predicted classes, whose noise on the slice is a binomial proportion's.
CLASSIFICATION_OBJECTIVES = ("accuracy", "f1", "mcc")
_Z = 1.959963984540054  # the two-sided 95% normal quantile


def check_search(search: SearchSpec, template: RunSpec, *, task: TaskType | None, train_rows: int | None) -> None:
    """What can be checked once the task and the number of selected training rows are known: before submitting
    when the file gives them, in the coordinator once the data is read. ValueError naming the field."""
    if task is not None and search.objective.metric not in SEARCH_METRICS[task]:
        raise ValueError(
            f"search.objective.metric: {task.value} runs report {', '.join(SEARCH_METRICS[task])}, "
            f"not {search.objective.metric!r}"
        )
    if train_rows is None:
        return
    held = holdout_rows(train_rows, search.objective.holdout)
    if held < SEARCH_MIN_HOLDOUT_ROWS or train_rows - held < SEARCH_MIN_HOLDOUT_ROWS:
        raise ValueError(
            f"search.objective.holdout: {train_rows} training rows cannot give a search slice of "
            f"{SEARCH_MIN_HOLDOUT_ROWS}+ rows and keep {SEARCH_MIN_HOLDOUT_ROWS}+ to train on "
            f"(holdout {search.objective.holdout} gives {held}); "
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
    """The training rows every trial of `search` holds out as its `search` slice (the objective's fraction,
    drawn with the search's seed)."""
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
    """The run id of trial `index` of the search `search_id` (`<search id>-t0007`, within the id length)."""
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


class SearchFlag(BaseModel):
    """Something that makes a search's ranking uninformative, and what to change."""

    kind: Literal["small-slice", "one-class", "tied", "within-noise", "constant-wins"]
    message: str


def separable_gap(rows: int, rate: float = 0.5) -> float:
    """The smallest difference between two accuracies measured on `rows` rows that is significant at 95%
    (two independent binomial proportions near `rate`)."""
    return _Z * math.sqrt(2 * rate * (1 - rate) / max(rows, 1))


def small_slice_flag(metric: str, slice_rows: int) -> SearchFlag | None:
    """A flag when a classification objective is measured on a slice too small to tell trials
    `SEPARABLE_GAP` apart (95%), with the rows that would; None otherwise."""
    if metric not in CLASSIFICATION_OBJECTIVES or separable_gap(slice_rows) <= SEPARABLE_GAP:
        return None
    need = math.ceil(2 * 0.25 * (_Z / SEPARABLE_GAP) ** 2)
    return SearchFlag(
        kind="small-slice",
        message=f"the search slice has {slice_rows} rows: two trials' accuracies must differ by "
        f"{separable_gap(slice_rows):.1%} to be told apart (95%); {need} rows tell {SEPARABLE_GAP:.0%} apart: "
        "raise search.objective.holdout or train.max_train_samples",
    )


def submission_flags(search: SearchSpec, template: RunSpec) -> list[SearchFlag]:
    """What can be flagged before a search is submitted: a slice too small for its objective, when the file
    gives the number of training rows (`train.max_train_samples`); the coordinator flags it again with the
    rows the data gave."""
    rows = template.train.max_train_samples
    if rows is None:
        return []
    flag = small_slice_flag(search.objective.metric, holdout_rows(rows, search.objective.holdout))
    return [flag] if flag is not None else []


def search_flags(
    *,
    metric: str,
    maximize: bool,
    slice_rows: int,
    objectives: Sequence[Sequence[float | None]],
    classes: Sequence[Sequence[int | None]],
    constant: float | None,
    best: int | None,
) -> list[SearchFlag]:
    """Why a search's ranking may mean nothing, each with what to change: a slice too small to separate
    trials, trials that predict one class, trials all tied or all within the slice's noise at a rung, and a
    winner no better than a constant prediction (`constant`: what one scores on the slice). `objectives` and
    `classes` are per trial, per rung processed; `best` indexes the winner, if any."""
    classification = metric in CLASSIFICATION_OBJECTIVES
    flags = [flag] if (flag := small_slice_flag(metric, slice_rows)) is not None else []
    one_class = [i for i, c in enumerate(classes) if c and c[-1] == 1]
    if one_class:
        who = "every trial predicts" if len(one_class) == len(classes) else f"trials {_indices(one_class)} predict"
        flags.append(
            SearchFlag(
                kind="one-class",
                message=f"{who} one class on the search slice at its last rung: the model learned nothing yet; train "
                "longer (more steps or epochs, larger min_steps) or search another learning-rate range",
            )
        )
    flags.extend(_tie_flags(metric, slice_rows, objectives, classification=classification))
    scores = [o[-1] for o in objectives if o and o[-1] is not None]
    final = objectives[best][-1] if best is not None else None
    if constant is not None and final is not None and (final <= constant if maximize else final >= constant):
        flags.append(
            SearchFlag(
                kind="constant-wins",
                message=f"a constant prediction scores {metric} {constant:.4f} on the search slice; the best trial's "
                f"{final:.4f} is no better: choose another objective ({_other_objectives(metric)}), or train longer",
            )
        )
    elif constant is not None and best is None and scores:
        top = max(scores) if maximize else min(scores)
        if top <= constant if maximize else top >= constant:
            flags.append(
                SearchFlag(
                    kind="constant-wins",
                    message=f"a constant prediction scores {metric} {constant:.4f} on the search slice; no trial "
                    f"does better so far: choose another objective ({_other_objectives(metric)}), or train longer",
                )
            )
    return flags


def _tie_flags(
    metric: str, rows: int, objectives: Sequence[Sequence[float | None]], *, classification: bool
) -> list[SearchFlag]:
    """At rung 0 and at the highest rung with two results or more: all equal, or (accuracy) all within the
    slice's noise."""
    flags: list[SearchFlag] = []
    depth = max((len(o) for o in objectives), default=0)
    rungs = sorted({0, *(r for r in range(depth) if sum(len(o) > r and o[r] is not None for o in objectives) >= 2)})
    for rung in (rungs[0], rungs[-1]) if len(rungs) > 1 else rungs[:1]:
        values = [v for o in objectives if len(o) > rung and (v := o[rung]) is not None]
        if len(values) < 2:
            continue
        spread = max(values) - min(values)
        if spread == 0:
            flags.append(
                SearchFlag(
                    kind="tied",
                    message=f"all {len(values)} trials at rung {rung} scored {metric} {values[0]:.4f}: nothing ranks "
                    "them (the slice's loss, then the trial index decided); train longer, widen the space, or "
                    "choose another objective",
                )
            )
        elif metric == "accuracy" and classification:
            rate = sum(values) / len(values)
            gap = separable_gap(rows, min(max(rate, 1 / max(rows, 1)), 1 - 1 / max(rows, 1)))
            if spread < gap:
                flags.append(
                    SearchFlag(
                        kind="within-noise",
                        message=f"the {len(values)} trials at rung {rung} span {spread:.1%} of accuracy, within the "
                        f"slice's noise ({gap:.1%} at 95% on {rows} rows): their order is chance; use a larger slice "
                        "or a wider space",
                    )
                )
    return flags


def _indices(indices: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:10])
    return shown + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")


def _other_objectives(metric: str) -> str:
    others = {"f1": "mcc or accuracy", "accuracy": "mcc", "mcc": "f1 or accuracy"}
    return others.get(metric, "another metric")
