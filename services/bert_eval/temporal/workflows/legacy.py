"""The types the previous release registered its children under. Workers keep serving them, so child
workflows started before an upgrade finish on the new workers, and recorded histories replay."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bert_eval.core.records import EvalResult
    from bert_eval.temporal.calls import FAIL_WORKFLOW_ON
    from bert_eval.temporal.names import WORKFLOW
    from bert_eval.temporal.payloads import EvalRunInput, TrainingInput, TrainingResult
    from bert_eval.temporal.workflows.evaluation import BertEvalWorkflow
    from bert_eval.temporal.workflows.training import CheckpointedBertTrainingWorkflow

__all__ = ["LEGACY_WORKFLOWS", "LegacyEvalWorkflow", "LegacyTrainingWorkflow"]


@workflow.defn(name=WORKFLOW.legacy_training, failure_exception_types=FAIL_WORKFLOW_ON)
class LegacyTrainingWorkflow(CheckpointedBertTrainingWorkflow):
    """`CheckpointedBertTrainingWorkflow` under its pre-reference-names type."""

    @workflow.run
    async def run(self, request: TrainingInput) -> TrainingResult:
        """`CheckpointedBertTrainingWorkflow.run`, unchanged."""
        return await super().run(request)


@workflow.defn(name=WORKFLOW.legacy_eval, failure_exception_types=FAIL_WORKFLOW_ON)
class LegacyEvalWorkflow(BertEvalWorkflow):
    """`BertEvalWorkflow` under its pre-reference-names type."""

    @workflow.run
    async def run(self, request: EvalRunInput) -> EvalResult:  # type: ignore[override]  # the old type took only this
        """A run's model evaluated on one split, as `BertEvalWorkflow` does for an `EvalRunInput`."""
        return await self._evaluate_run(request)


LEGACY_WORKFLOWS = (LegacyTrainingWorkflow, LegacyEvalWorkflow)
