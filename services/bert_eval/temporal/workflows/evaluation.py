"""`BertEvalWorkflow`: evaluate one trained model on one split on the CPU pool."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from bert_eval.core.data.snapshot import SnapshotInput
    from bert_eval.core.records import EvalResult, ModelInfo, SnapshotResult
    from bert_eval.reference_compat import (
        BertEvalRequest,
        BertEvalResult,
        ReferenceInputError,
        reference_evaluation,
        reference_result,
    )
    from bert_eval.temporal.activities import EvalActivities
    from bert_eval.temporal.calls import FAIL_WORKFLOW_ON, activity_of_run
    from bert_eval.temporal.names import INVALID_INPUT, TIMEOUTS, WORKFLOW
    from bert_eval.temporal.payloads import CellInput, EvalRunInput, EvalWorkflowRequest, ModelSourceInput

__all__ = ["BertEvalWorkflow"]


@workflow.defn(name=WORKFLOW.eval, failure_exception_types=FAIL_WORKFLOW_ON)
class BertEvalWorkflow:
    """Evaluate one trained model on one split (CPU pool): a run's model for the coordinator, or any model a
    reference-design client names in a `BertEvalRequest`."""

    @workflow.run
    async def run(self, request: EvalWorkflowRequest) -> EvalResult | BertEvalResult:
        """Evaluate the model the request names.

        Parameters
        ----------
        request : EvalWorkflowRequest
            An `EvalRunInput` (a run's model and split, from the coordinator) or a reference-design
            `BertEvalRequest` (a model path or run id, a dataset and a split).

        Returns
        -------
        EvalResult
            For an `EvalRunInput`: the metrics of the run's model on the split.
        BertEvalResult
            For a `BertEvalRequest`: the same, in the reference design's shape.

        Raises
        ------
        ApplicationError
            Non-retryable (`INVALID_INPUT`) when a `BertEvalRequest` names no usable model or data; an
            evaluation that keeps failing the same way fails the workflow after a bounded number of tries.
        """
        if isinstance(request.root, BertEvalRequest):
            return await self._run_reference(request.root)
        return await self._evaluate_run(request.root)

    async def _evaluate_run(self, request: EvalRunInput) -> EvalResult:
        return await activity_of_run(
            request.run_id,
            EvalActivities.evaluate_model,
            request,
            start_to_close=TIMEOUTS.evaluate_start_to_close,
            heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout_s),
        )

    async def _run_reference(self, request: BertEvalRequest) -> BertEvalResult:
        """The model `model_path` (or `run_id`) names, evaluated as a cell of the evaluation matrix."""
        try:
            wanted = reference_evaluation(request)
        except ReferenceInputError as exc:
            raise ApplicationError(str(exc), type=INVALID_INPUT, non_retryable=True) from None
        label = wanted.run_id or "model-path"
        model: ModelInfo = await activity_of_run(
            label,
            EvalActivities.describe_model,
            ModelSourceInput(run_id=label, source=wanted.model_path, reference_path=True),
            start_to_close=TIMEOUTS.find_existing_start_to_close,
        )
        run_id = wanted.run_id or model.run_id or f"model-{model.digest[:10]}"
        snapshot: SnapshotResult = await activity_of_run(
            run_id,
            EvalActivities.snapshot_dataset,
            SnapshotInput.for_model(
                run_id=run_id,
                dataset=wanted.dataset,
                model=model,
                eval_split=wanted.request.split,
                max_eval_samples=wanted.request.max_eval_samples,
            ),
            start_to_close=TIMEOUTS.snapshot_start_to_close,
            heartbeat_timeout=TIMEOUTS.predict_heartbeat,
        )
        evaluation: EvalResult = await activity_of_run(
            run_id,
            EvalActivities.evaluate_cell,
            CellInput(
                experiment_id=workflow.info().workflow_id,
                run_id=run_id,
                model=model,
                snapshot=snapshot,
                request=wanted.request,
            ),
            start_to_close=TIMEOUTS.evaluate_start_to_close,
            heartbeat_timeout=TIMEOUTS.predict_heartbeat,
        )
        return reference_result(wanted, evaluation, reused=evaluation.reused)
