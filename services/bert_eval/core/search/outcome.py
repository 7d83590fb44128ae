"""A search's outcome as every reader sees it (the coordinator's status and result, `run --json`, the report,
MLflow): one record per trial and the leaderboard. Defined here, in the core, so that readers of the runs
volume need not import the Temporal layer; the workflow payloads use these same types."""

from __future__ import annotations

from pydantic import BaseModel

from bert_eval.core.search.asha import TrialState
from bert_eval.search import SearchFlag

__all__ = ["SearchOutcome", "SearchTrial"]


class SearchTrial(BaseModel):
    """One trial of a search, as `bert-eval run --json` writes it."""

    trial: int
    run_id: str
    params: dict[str, float | int]
    rung: int  # the highest rung it reached (0-based; -1: none yet)
    steps: int  # the steps it trained to
    state: TrialState
    objective: float | None = None  # at its highest rung, on the search slice
    objectives: list[float | None] = []  # per rung
    metrics: dict[str, float] | None = None  # final evaluation on the experiment's eval split (completed trials)
    train_seconds: float = 0.0
    error: str | None = None
    predicted_classes: int | None = None  # distinct classes predicted on the slice at its highest rung


class SearchOutcome(BaseModel):
    """A search's leaderboard: every trial, the rung steps, the promotions decided and the best trial."""

    experiment_id: str
    metric: str
    maximize: bool
    rungs: list[int]  # the rung steps of the template's budget (trials with another budget end elsewhere)
    trials: list[SearchTrial]
    best: str | None = None  # run id of the best completed trial
    promotions: list[str] = []  # "trial:rung->rung", by rung, in the order decided within each rung
    continued: int = 0
    finished: bool = False
    flags: list[SearchFlag] = []  # why the ranking may mean nothing, each with what to change
