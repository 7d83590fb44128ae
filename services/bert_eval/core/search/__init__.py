"""Hyperparameter search: ASHA's promotion ladder (Li et al. 2020), rung evaluations on a trial's checkpoints,
and parameter sampling through Optuna's samplers."""

from typing import TYPE_CHECKING

from bert_eval.core._lazy import lazy_exports

if TYPE_CHECKING:
    from bert_eval.core.search.asha import Job, Ladder, Trial, TrialState
    from bert_eval.core.search.outcome import SearchOutcome, SearchTrial
    from bert_eval.core.search.rungs import RungResult, evaluate_rung
    from bert_eval.core.search.sampling import suggest

__all__ = [
    "Job",
    "Ladder",
    "RungResult",
    "SearchOutcome",
    "SearchTrial",
    "Trial",
    "TrialState",
    "evaluate_rung",
    "suggest",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Job": "asha",
        "Ladder": "asha",
        "RungResult": "rungs",
        "SearchOutcome": "outcome",
        "SearchTrial": "outcome",
        "Trial": "asha",
        "TrialState": "asha",
        "evaluate_rung": "rungs",
        "suggest": "sampling",
    },
)
