"""A search's next trial, from Optuna's samplers in ask/tell form.

`suggest` builds an in-memory study from the trials so far, asks it for one trial and returns its params.
It is a pure function of its arguments (the sampler is seeded from the search seed and the trial's index),
so the search workflow runs it as an activity: the answer is recorded in the workflow's history, replay
reads it back, and a killed worker asks nothing again.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from bert_eval.spec import Distribution, SearchSpec

__all__ = ["optuna_distribution", "suggest"]

optuna.logging.set_verbosity(optuna.logging.WARNING)

Params = dict[str, float | int]


def suggest(search: SearchSpec, index: int, history: Sequence[tuple[Params, float | None, bool]]) -> Params:
    """The params of trial `index`, given (params, objective, objective known) of the trials before it."""
    distributions = {path: optuna_distribution(d) for path, d in search.space.items()}
    study = optuna.create_study(direction="maximize" if search.objective.maximize else "minimize", sampler=_sampler(search, index))
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
        study.add_trial(create_trial(params=dict(params), distributions=distributions, state=state, value=value if state is TrialState.COMPLETE else None))
    trial = study.ask(distributions)
    return {path: trial.params[path] for path in search.space}


def _sampler(search: SearchSpec, index: int) -> optuna.samplers.BaseSampler:
    # One seed per trial: trials sampled from the same history must still differ.
    seed = (search.seed * 1_000_003 + index) % 2**32
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler({path: list(d.choices or ()) for path, d in search.space.items()}, seed=search.seed)


def optuna_distribution(d: Distribution) -> BaseDistribution:
    """The Optuna distribution of one `space:` entry."""
    if d.kind == "choice":
        return CategoricalDistribution(list(d.choices or ()))
    assert d.low is not None and d.high is not None
    if d.kind == "int":
        return IntDistribution(int(d.low), int(d.high))
    return FloatDistribution(d.low, d.high, log=d.kind == "loguniform")
