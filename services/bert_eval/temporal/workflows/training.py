"""`CheckpointedBertTrainingWorkflow`: fine-tune one run with checkpoints on the GPU pool."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from bert_eval.core.records import TrainingProgress, TrainingSummary
    from bert_eval.temporal.activities import FineTuneInput, TrainingActivities
    from bert_eval.temporal.calls import FAIL_WORKFLOW_ON, activity_of_run, snapshot_mismatch, snapshot_of
    from bert_eval.temporal.names import INVALID_INPUT, LEGACY_PROGRESS_SIGNAL, QUERY, TIMEOUTS, WORKFLOW
    from bert_eval.temporal.payloads import TrainingInput, TrainingResult

__all__ = ["CheckpointedBertTrainingWorkflow"]


@workflow.defn(name=WORKFLOW.training, failure_exception_types=FAIL_WORKFLOW_ON)
class CheckpointedBertTrainingWorkflow:
    """Fine-tune one run with checkpoints (GPU pool) on the snapshot its input carries (taken first, on
    the eval pool, when the input has none).

    Live training progress is the fine-tune activity's heartbeat (clients read it with describe):
    no signals, so the history stays a few dozen events however long the run.
    """

    def __init__(self) -> None:
        self._progress: TrainingProgress | None = None

    @workflow.run
    async def run(self, request: TrainingInput) -> TrainingResult:
        """Fine-tune one run: take its snapshot if the request carries none, then the fine-tune activity on
        the training queue (resumed from checkpoints across worker losses).

        Parameters
        ----------
        request : TrainingInput
            The run, its snapshot (or None: taken here, on `eval_task_queue`), the snapshot id it must match,
            the heartbeat timeout, and `stop_at_step` for a search rung.

        Returns
        -------
        TrainingResult
            The training summary and the snapshot it trained on.

        Raises
        ------
        ApplicationError
            Non-retryable (`INVALID_INPUT`) when the snapshot taken is not the pinned one; a fine-tune that
            keeps failing the same way fails the workflow after a bounded number of tries.
        """
        run = request.run
        snapshot = request.snapshot
        if snapshot is None:
            self._progress = TrainingProgress(run_id=run.id, phase="snapshot")
            snapshot = await snapshot_of(
                run, heartbeat_timeout_s=request.heartbeat_timeout_s, task_queue=request.eval_task_queue
            )
        pinned = request.expected_snapshot_id
        if pinned is not None and snapshot.snapshot_id != pinned:
            raise ApplicationError(
                snapshot_mismatch(run.id, pinned, snapshot.snapshot_id), type=INVALID_INPUT, non_retryable=True
            )
        self._progress = TrainingProgress(run_id=run.id, phase="loading")
        summary: TrainingSummary = await activity_of_run(
            run.id,
            TrainingActivities.fine_tune,
            FineTuneInput(
                experiment_id=request.experiment_id, run=run, snapshot=snapshot, stop_at_step=request.stop_at_step
            ),
            start_to_close=TIMEOUTS.fine_tune_start_to_close,
            # A killed worker stops heartbeating: its attempt times out and another worker resumes.
            heartbeat_timeout=timedelta(seconds=request.heartbeat_timeout_s),
        )
        self._progress = self._progress.model_copy(
            update={
                "phase": "paused" if summary.rung_checkpoint else "completed",
                "step": summary.steps,
                "total_steps": summary.steps,
                "loss": summary.final_loss,
            }
        )
        return TrainingResult(summary=summary, snapshot=snapshot)

    @workflow.signal(name=LEGACY_PROGRESS_SIGNAL)
    def report_progress(self, progress: TrainingProgress) -> None:
        """Kept so histories recorded before heartbeat-only progress still replay; nothing sends it now."""
        if self._progress is None or self._progress.phase != "completed":
            self._progress = progress

    @workflow.query(name=QUERY.progress)
    def progress(self) -> TrainingProgress | None:
        """The workflow's phase; step-level progress is in the fine-tune activity's heartbeat."""
        return self._progress
