"""Hyperparameter search: ASHA's promotion ladder (Li et al. 2020), rung evaluations on a trial's checkpoints,
and parameter sampling through Optuna's samplers."""

from bert_eval.core.search.asha import Job, Ladder, Trial, TrialState
from bert_eval.core.search.rungs import RungResult, evaluate_rung
from bert_eval.core.search.sampling import suggest

__all__ = ["Job", "Ladder", "RungResult", "Trial", "TrialState", "evaluate_rung", "suggest"]
