"""A search's next trial, from Optuna's samplers in ask/tell form.

`suggest` builds an in-memory study from the trials so far, asks it for one trial and returns its params.
It is a pure function of its arguments (the sampler is seeded from the search seed and the trial's index),
so the search workflow runs it as an activity: the answer is recorded in the workflow's history, replay
reads it back, and a killed worker asks nothing again.

A trial the ladder stopped below its budget is told to the study as pruned, with its objective at each rung
it reached as an intermediate value (step = rung index): TPE ranks pruned trials by the highest rung reached,
then by their value there (`optuna.samplers.TPESampler`), so it learns from the furthest each trial got.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from bert_eval.core.search.asha import SeenTrial
from bert_eval.spec import Distribution, SearchSpec

__all__ = ["TPE_STARTUP_TRIALS", "free_samples", "optuna_distribution", "suggest"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

Params = dict[str, float | int]

# TPE samples at random until this many trials are finished (Optuna's default, set explicitly).
TPE_STARTUP_TRIALS = 10


def free_samples(search: SearchSpec, lag: int) -> int:
    """How many trials the search's sampler draws without looking at any result, so without waiting: every
    trial for random and grid sampling; for TPE, those that see fewer than its start-up count of finished
    trials (trial i sees i - lag + 1)."""
    if search.sampler == "tpe":
        return min(TPE_STARTUP_TRIALS + lag - 1, search.trials)
    return search.trials


def suggest(
    search: SearchSpec,
    index: int,
    history: Sequence[tuple[Params, float | None, bool]],
    seen: Sequence[SeenTrial] | None = None,
) -> Params:
    """The params of trial `index`. `seen` (`Ladder.sampler_view`): every earlier trial with the rung results
    its sampler may see. `history`: what searches started before `seen` existed pass instead, (params,
    rung-0 objective, known) per earlier trial; it is ignored when `seen` is given."""
    distributions = {path: optuna_distribution(d) for path, d in search.space.items()}
    study = optuna.create_study(
        direction="maximize" if search.objective.maximize else "minimize", sampler=_sampler(search, index)
    )
    if seen is not None:
        for trial in seen:
            study.add_trial(_frozen(search, trial, distributions))
        return _ask(study, search, distributions)
    for params, value, known in history:
        if search.sampler == "grid":
            # The grid sampler skips the points of finished trials; every earlier trial's point is taken.
            state, value = TrialState.COMPLETE, 0.0 if value is None else value
        elif not known:
            state = TrialState.RUNNING
        elif value is None:
            state = TrialState.FAIL
        else:
            state = TrialState.COMPLETE
        study.add_trial(
            create_trial(
                params=dict(params),
                distributions=distributions,
                state=state,
                value=value if state is TrialState.COMPLETE else None,
            )
        )
    return _ask(study, search, distributions)


def _ask(study: optuna.Study, search: SearchSpec, distributions: dict[str, BaseDistribution]) -> Params:
    trial = study.ask(distributions)
    return {path: trial.params[path] for path in search.space}


def _frozen(search: SearchSpec, trial: SeenTrial, distributions: dict[str, BaseDistribution]) -> FrozenTrial:
    """A seen trial as Optuna records it: complete at its full budget, pruned (intermediate values per rung)
    below it, failed, or running while none of its results is seen."""
    params = dict(trial.params)
    if search.sampler == "grid":
        # The grid sampler skips the points of finished trials; every earlier trial's point is taken.
        return create_trial(params=params, distributions=distributions, state=TrialState.COMPLETE, value=0.0)
    if not trial.objectives:
        return create_trial(params=params, distributions=distributions, state=TrialState.RUNNING)
    last = trial.objectives[-1]
    if last is None:
        return create_trial(params=params, distributions=distributions, state=TrialState.FAIL)
    if trial.completed:
        return create_trial(params=params, distributions=distributions, state=TrialState.COMPLETE, value=last)
    steps = {rung: value for rung, value in enumerate(trial.objectives) if value is not None}
    return create_trial(params=params, distributions=distributions, state=TrialState.PRUNED, intermediate_values=steps)


def _sampler(search: SearchSpec, index: int) -> optuna.samplers.BaseSampler:
    # One seed per trial: trials sampled from the same history must still differ.
    seed = (search.seed * 1_000_003 + index) % 2**32
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=TPE_STARTUP_TRIALS)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler(
        {path: list(d.choices or ()) for path, d in search.space.items()}, seed=search.seed
    )


def optuna_distribution(d: Distribution) -> BaseDistribution:
    """The Optuna distribution of one `space:` entry."""
    if d.kind == "choice":
        return CategoricalDistribution(list(d.choices or ()))
    assert d.low is not None and d.high is not None
    if d.kind == "int":
        return IntDistribution(int(d.low), int(d.high))
    return FloatDistribution(d.low, d.high, log=d.kind == "loguniform")
