"""Workflows: orchestration only (no I/O). Deterministic; every side effect is an activity.

One workflow per module, each reading run -> steps -> finish, with its handlers (queries, signals) last:

- `coordinator`: `CoordinatorWorkflow` takes an experiment (runs, a search, an evaluation matrix, eval-only
  runs) or the reference design's `{"configs": [...]}` and returns one record per run.
- `training`: `CheckpointedBertTrainingWorkflow` fine-tunes one run with checkpoints on the GPU pool.
- `evaluation`: `BertEvalWorkflow` evaluates one model on one split on the CPU pool.
- `predict`: `PredictWorkflow` labels texts with a run's final model.
- `legacy`: the types an earlier release registered its children under, still served for replay and upgrades.

Changing what these workflows do changes their command sequence: follow docs/versioning.md
(`workflow.patched`, then record a new history under tests/replay/histories/).
"""

from bert_eval.temporal.names import (
    EXPERIMENT_ID,
    RUN_ID,
    coordinator_workflow_id,
    eval_workflow_id,
    predict_workflow_id,
    training_workflow_id,
)
from bert_eval.temporal.workflows.coordinator import CoordinatorWorkflow
from bert_eval.temporal.workflows.evaluation import BertEvalWorkflow
from bert_eval.temporal.workflows.legacy import LEGACY_WORKFLOWS, LegacyEvalWorkflow, LegacyTrainingWorkflow
from bert_eval.temporal.workflows.predict import PredictWorkflow
from bert_eval.temporal.workflows.training import CheckpointedBertTrainingWorkflow

__all__ = [
    "EXPERIMENT_ID",
    "LEGACY_WORKFLOWS",
    "RUN_ID",
    "BertEvalWorkflow",
    "CheckpointedBertTrainingWorkflow",
    "CoordinatorWorkflow",
    "LegacyEvalWorkflow",
    "LegacyTrainingWorkflow",
    "PredictWorkflow",
    "coordinator_workflow_id",
    "eval_workflow_id",
    "predict_workflow_id",
    "training_workflow_id",
]
