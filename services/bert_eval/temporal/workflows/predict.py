"""`PredictWorkflow`: label texts with a trained run's final model on the CPU pool."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from bert_eval.core.records import PredictResult
    from bert_eval.temporal.activities import EvalActivities
    from bert_eval.temporal.calls import FAIL_WORKFLOW_ON, RETRY
    from bert_eval.temporal.names import TIMEOUTS, WORKFLOW
    from bert_eval.temporal.payloads import PredictInput

__all__ = ["PredictWorkflow"]


@workflow.defn(name=WORKFLOW.predict, failure_exception_types=FAIL_WORKFLOW_ON)
class PredictWorkflow:
    """Label texts with a trained run's final model (eval pool)."""

    @workflow.run
    async def run(self, request: PredictInput) -> PredictResult:
        """Label `request.texts` with the final model of `request.run_id`.

        Parameters
        ----------
        request : PredictInput
            The run, the texts, and optionally the sequence length, batch size and device.

        Returns
        -------
        PredictResult
            One predicted label (classification: with its confidence; regression: the value) per text, in order.

        Raises
        ------
        ActivityError
            When the predict activity fails for good: the run has no final model (non-retryable), or its
            retries are spent.
        """
        return await workflow.execute_activity_method(
            EvalActivities.predict,
            request,
            task_queue=workflow.info().task_queue,
            start_to_close_timeout=TIMEOUTS.predict_start_to_close,
            heartbeat_timeout=TIMEOUTS.predict_heartbeat,
            retry_policy=RETRY,
        )
