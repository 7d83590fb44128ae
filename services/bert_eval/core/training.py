"""Fine-tuning with the Hugging Face Trainer: atomic checkpoints, resume, bounded lost work.

`fine_tune()` is callable from a test or a notebook with plain arguments. It reports progress through
one callback and stops (after saving a checkpoint) when `should_stop()` turns true.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import (
    DataCollatorWithPadding,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)

from bert_eval import telemetry
from bert_eval.core.checkpoints import Checkpoint, CheckpointStore
from bert_eval.core.errors import InvalidInputError, TrainingInterrupted
from bert_eval.core.fsutil import atomic_write_json, discard_dir, publish_dir
from bert_eval.core.journal import RunJournal
from bert_eval.core.layout import RunLayout
from bert_eval.core.modeling import load_for_classification
from bert_eval.core.rundir import AttemptFence, claim_run_dir, completed_summary
from bert_eval.core.snapshot import read_split
from bert_eval.core.tokenize import tokenize_split
from bert_eval.types import CheckpointRef, RunSpec, SnapshotResult, TrainingProgress, TrainingSummary

__all__ = ["FineTuneRequest", "fine_tune"]

log = telemetry.get_logger(__name__)

ProgressCallback = Callable[[TrainingProgress], None]


@dataclass(frozen=True)
class FineTuneRequest:
    run: RunSpec
    snapshot: SnapshotResult
    runs_dir: Path
    device: str = "cpu"
    attempt: int = 1
    # The previous attempt's last heartbeat, if any: where it stood when it was lost.
    previous: TrainingProgress | None = None
    # When this attempt was scheduled (Temporal's clock); orders attempts for write fencing. None: now.
    scheduled_at: float | None = None


def fine_tune(
    request: FineTuneRequest,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainingSummary:
    run, hp = request.run, request.run.train
    layout = RunLayout(request.runs_dir, run.id)
    claim_run_dir(layout, run)
    if (done := completed_summary(layout, run)) is not None:
        log.info("training already completed; reusing it", run_id=run.id, steps=done.steps)
        return done

    report = _Reporter(run.id, request.attempt, on_progress)
    report.update(phase="loading")
    telemetry.set_phase(run.id, "loading")
    # Fencing: from here on only the newest attempt may publish checkpoints, the model, the summary.
    fence = AttemptFence(layout, attempt=request.attempt, scheduled_at=request.scheduled_at)
    fence.claim()
    journal = RunJournal(layout.journal_file)
    journal.append("attempt", attempt=request.attempt)

    store = CheckpointStore(layout.checkpoints, keep=hp.keep_checkpoints, guard=fence.publishing)
    latest = store.latest_complete()
    if latest is not None:
        _check_checkpoint_matches(latest, run)
    _compare_with_heartbeat(run.id, latest, request.previous)

    schema = request.snapshot.dataset_schema
    set_seed(hp.seed)  # the classifier head's random init must be the same on every attempt
    try:
        tokenizer, model = load_for_classification(run.model, schema)
    except InvalidInputError as exc:
        raise InvalidInputError(f"run {run.id}: {exc}") from exc
    _check_sequence_length(run, model.config)
    # Saved with the final model, so evaluation truncates exactly as training did.
    tokenizer.model_max_length = hp.max_seq_length
    train_split = read_split(request.snapshot, "train", run_id=run.id)
    train_set = tokenize_split(train_split, tokenizer, max_length=hp.max_seq_length)

    args = TrainingArguments(
        output_dir=str(layout.checkpoints),
        per_device_train_batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        weight_decay=hp.weight_decay,
        warmup_steps=hp.warmup_ratio,
        num_train_epochs=hp.epochs,
        lr_scheduler_type="linear",
        # Every step is logged, so each log entry is one step's exact loss: a resumed run's history
        # (and final loss) then matches an uninterrupted one, whatever step it resumed from.
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps",
        save_steps=hp.checkpoint_every_steps,
        save_total_limit=None,  # retention is the store's job (it knows what is complete)
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        log_level="error",
        seed=hp.seed,
        data_seed=hp.seed,
        use_cpu=request.device == "cpu",
        bf16=request.device == "cuda" and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
    )
    callback = _ProgressAndControl(
        run=run,
        report=report,
        should_stop=should_stop or (lambda: False),
        checkpoint_every_s=hp.checkpoint_every_seconds,
        resumed_from=latest.step if latest else None,
        previous=request.previous,
        journal=journal,
        attempt=request.attempt,
    )
    trainer = _CheckpointingTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        callbacks=[callback],
        store=store,
        fingerprint=run.fingerprint(),
        model_name=run.model,
        journal=journal,
        report=report,
        run_id=run.id,
    )
    callback.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # our callback logs progress; no raw dicts on stdout
    if latest is not None:
        log.info("resuming from checkpoint", run_id=run.id, step=latest.step, path=str(latest.path))
        report.update(last_checkpoint=CheckpointRef(step=latest.step, path=str(latest.path)), resumed_from_step=latest.step)
    with telemetry.tracer().start_as_current_span(
        "train", attributes={"run_id": run.id, "attempt": request.attempt, "resumed_from_step": latest.step if latest else -1}
    ):
        trainer.train(resume_from_checkpoint=str(latest.path) if latest else None)

    state = trainer.state
    if callback.stop_requested:
        newest = store.latest_complete()
        telemetry.set_phase(run.id, "interrupted")
        raise TrainingInterrupted(run.id, state.global_step, str(newest.path) if newest else None)

    report.update(phase="saving", step=state.global_step)
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    final_window = losses[-hp.logging_steps :]
    resumes = journal.of_kind("resume")
    summary = TrainingSummary(
        run_id=run.id,
        model=run.model,
        final_loss=round(sum(final_window) / len(final_window), 6) if final_window else None,
        steps=state.global_step,
        epochs=round(float(state.epoch or 0.0), 4),
        checkpoints_saved=len(journal.of_kind("checkpoint")),
        resumes=len(resumes),
        resumed_from_steps=tuple(int(e["from_step"]) for e in resumes),
        # From the first attempt's start: time lost to crashes and recovery counts too.
        wall_time_s=round(time.time() - min(e["time"] for e in journal.of_kind("attempt")), 3),
        train_samples=len(train_set),
        dataset_schema=schema,
        model_dir=str(layout.model_dir),
        snapshot_id=request.snapshot.snapshot_id,
    )
    _publish_results(trainer, layout, fence, run, summary)
    journal.append("completed", step=state.global_step, attempt=request.attempt)
    telemetry.set_phase(run.id, "completed")
    report.update(phase="completed", step=state.global_step)
    return summary


def _check_checkpoint_matches(checkpoint: Checkpoint, run: RunSpec) -> None:
    manifest = checkpoint.manifest()
    if manifest.get("fingerprint") != run.fingerprint():
        raise InvalidInputError(
            f"run {run.id}: checkpoint {checkpoint.path} was written for a different model or configuration "
            f"(model {manifest.get('model')!r}); refusing to resume from it. Use a new run_id, or delete "
            f"{checkpoint.path.parent} to start this run over."
        )


def _check_sequence_length(run: RunSpec, config: Any) -> None:
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and run.train.max_seq_length > limit:
        raise InvalidInputError(
            f"run {run.id}: train.max_seq_length {run.train.max_seq_length} exceeds model {run.model!r}'s "
            f"position limit (max_position_embeddings {limit}); set train.max_seq_length to {limit} or less"
        )


def _compare_with_heartbeat(run_id: str, latest: Checkpoint | None, previous: TrainingProgress | None) -> None:
    if previous is None or previous.last_checkpoint is None:
        return
    on_disk = latest.step if latest else None
    if on_disk is None or on_disk < previous.last_checkpoint.step:
        # The shared volume shows less than the last worker reported: it is stale or not shared.
        log.warning(
            "heartbeat reports a newer checkpoint than the disk shows; resuming from what is on disk",
            run_id=run_id,
            heartbeat_step=previous.last_checkpoint.step,
            disk_step=on_disk,
        )


def _publish_results(trainer: Trainer, layout: RunLayout, fence: AttemptFence, run: RunSpec, summary: TrainingSummary) -> None:
    """Final model, loss history and summary, published only while this attempt is the current one."""
    staging = layout.root / f".model-staging-{uuid.uuid4().hex[:8]}"
    try:
        trainer.save_model(str(staging))
        with fence.publishing("publish the final model and summary"):
            # An existing model was left by an attempt that died between publishing it and the summary.
            publish_dir(staging, layout.model_dir, replace=True)
            atomic_write_json(layout.history_file, {"run_id": run.id, "log_history": trainer.state.log_history})
            atomic_write_json(layout.summary_file, {"fingerprint": run.fingerprint(), "summary": summary.model_dump(mode="json")})
    finally:
        discard_dir(staging)


class _Reporter:
    """Holds the latest TrainingProgress and forwards every change to the caller's callback."""

    def __init__(self, run_id: str, attempt: int, sink: ProgressCallback | None) -> None:
        self.progress = TrainingProgress(run_id=run_id, attempt=attempt)
        self._sink = sink

    def update(self, **changes: Any) -> None:
        self.progress = self.progress.model_copy(update=changes)
        if self._sink is not None:
            self._sink(self.progress)


class _CheckpointingTrainer(Trainer):
    """Trainer whose checkpoints are staged, fsynced and renamed into place by the CheckpointStore."""

    def __init__(
        self,
        *args: Any,
        store: CheckpointStore,
        fingerprint: str,
        model_name: str,
        journal: RunJournal,
        report: _Reporter,
        run_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._store, self._fingerprint, self._model_name = store, fingerprint, model_name
        self._journal, self._report, self._run_id = journal, report, run_id
        self._staging: Path | None = None
        self.real_tokens = 0
        self.last_save_time = time.monotonic()

    def _get_output_dir(self, trial: Any) -> str:
        if self._staging is not None:
            return str(self._staging)
        return super()._get_output_dir(trial)

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        mask = inputs.get("attention_mask")
        if mask is not None:
            self.real_tokens += int(mask.sum())
        return super().training_step(model, inputs, num_items_in_batch)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        step = self.state.global_step
        labels = {"run_id": self._run_id, "model": self._model_name}
        self._report.update(phase="saving", step=step)
        telemetry.set_phase(self._run_id, "saving")
        started = time.monotonic()
        with telemetry.tracer().start_as_current_span("checkpoint.save", attributes={"run_id": self._run_id, "step": step}):
            with self._store.staging(step=step, owner=f"run {self._run_id}") as staging_root:
                self._staging = staging_root
                try:
                    super()._save_checkpoint(model, trial)
                finally:
                    self._staging = None
                checkpoint = self._store.publish(
                    staging_root / f"checkpoint-{step}", step=step, manifest={"fingerprint": self._fingerprint, "model": self._model_name}
                )
            self._store.prune()
        seconds = time.monotonic() - started
        size = sum(f.stat().st_size for f in checkpoint.path.rglob("*") if f.is_file())
        telemetry.TRAINING.checkpoint_seconds.labels(**labels).observe(seconds)
        telemetry.TRAINING.checkpoint_bytes.labels(**labels).set(size)
        telemetry.TRAINING.checkpoints.labels(**labels).inc()
        self._journal.append("checkpoint", step=step, seconds=round(seconds, 3), bytes=size, path=str(checkpoint.path))
        self.last_save_time = time.monotonic()
        telemetry.set_phase(self._run_id, "training")
        self._report.update(phase="training", last_checkpoint=CheckpointRef(step=step, path=str(checkpoint.path)))
        log.info("checkpoint saved", run_id=self._run_id, step=step, seconds=round(seconds, 3), bytes=size)


class _ProgressAndControl(TrainerCallback):
    """Progress reports, time-based checkpoints, stop requests, throughput and resume figures."""

    def __init__(
        self,
        *,
        run: RunSpec,
        report: _Reporter,
        should_stop: Callable[[], bool],
        checkpoint_every_s: float | None,
        resumed_from: int | None,
        previous: TrainingProgress | None,
        journal: RunJournal,
        attempt: int,
    ) -> None:
        self.run, self.report, self.should_stop = run, report, should_stop
        self.checkpoint_every_s = checkpoint_every_s
        self.resumed_from, self.previous = resumed_from, previous
        self.journal, self.attempt = journal, attempt
        self.trainer: _CheckpointingTrainer | None = None
        self.stop_requested = False
        self._first_step_seen = False
        self._window = (time.monotonic(), 0, 0)  # (time, step, real tokens) at the last log
        self._labels = {"run_id": run.id, "model": run.model}
        self._epoch_span: Any = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        telemetry.TRAINING.total_steps.labels(**self._labels).set(state.max_steps)
        telemetry.set_phase(self.run.id, "training")
        self.report.update(phase="training", total_steps=state.max_steps, step=state.global_step)
        self._window = (time.monotonic(), state.global_step, 0)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if not self._first_step_seen:
            self._first_step_seen = True
            if self.resumed_from is not None:
                self._record_resume(state)
        telemetry.TRAINING.step.labels(**self._labels).set(state.global_step)
        telemetry.TRAINING.epoch.labels(**self._labels).set(state.epoch or 0.0)
        self.report.update(step=state.global_step, epoch=round(float(state.epoch or 0.0), 4))
        assert self.trainer is not None
        if self.checkpoint_every_s and time.monotonic() - self.trainer.last_save_time >= self.checkpoint_every_s:
            control.should_save = True  # bound the work a crash can lose, whatever the step rate
        if not self.stop_requested and self.should_stop():
            self.stop_requested = True
            control.should_save = True
            control.should_training_stop = True
            log.info("stop requested; saving a checkpoint and stopping", run_id=self.run.id, step=state.global_step)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict | None = None, **kw: Any) -> None:
        logs = logs or {}
        if "loss" not in logs:
            return
        metrics = telemetry.TRAINING
        metrics.loss.labels(**self._labels).set(logs["loss"])
        if "learning_rate" in logs:
            metrics.learning_rate.labels(**self._labels).set(logs["learning_rate"])
        self.report.update(loss=float(logs["loss"]), learning_rate=logs.get("learning_rate"))
        if state.global_step % self.run.train.logging_steps:
            return
        # Throughput over the logging window (one step is too noisy to be useful).
        assert self.trainer is not None
        now = time.monotonic()
        then, step_then, tokens_then = self._window
        elapsed = max(now - then, 1e-9)
        samples_per_s = (state.global_step - step_then) * args.per_device_train_batch_size / elapsed
        tokens_per_s = (self.trainer.real_tokens - tokens_then) / elapsed
        self._window = (now, state.global_step, self.trainer.real_tokens)
        metrics.samples_per_second.labels(**self._labels).set(samples_per_s)
        metrics.tokens_per_second.labels(**self._labels).set(tokens_per_s)
        log.info(
            "training progress",
            run_id=self.run.id,
            step=state.global_step,
            total_steps=state.max_steps,
            loss=round(float(logs["loss"]), 5),
            samples_per_s=round(samples_per_s, 2),
            tokens_per_s=round(tokens_per_s, 1),
        )

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self._end_epoch_span()
        self._epoch_span = telemetry.tracer().start_span(
            "epoch", attributes={"run_id": self.run.id, "epoch": int(state.epoch or 0), "start_step": state.global_step}
        )

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self._end_epoch_span()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        self._end_epoch_span()

    def _end_epoch_span(self) -> None:
        if self._epoch_span is not None:
            self._epoch_span.end()
            self._epoch_span = None

    def _record_resume(self, state: TrainerState) -> None:
        recovery_s = steps_lost = None
        if self.previous is not None:
            if self.previous.heartbeat_time is not None:
                recovery_s = round(time.time() - self.previous.heartbeat_time, 3)
            steps_lost = max(self.previous.step - (self.resumed_from or 0), 0)
        metrics = telemetry.TRAINING
        metrics.resumes.labels(**self._labels).inc()
        if recovery_s is not None:
            metrics.recovery_seconds.labels(**self._labels).set(recovery_s)
        if steps_lost is not None:
            metrics.steps_lost.labels(**self._labels).set(steps_lost)
        self.journal.append(
            "resume",
            from_step=self.resumed_from,
            attempt=self.attempt,
            recovery_seconds=recovery_s,
            steps_lost=steps_lost,
        )
        with telemetry.tracer().start_as_current_span(
            "resume",
            attributes={
                "run_id": self.run.id,
                "from_step": self.resumed_from or 0,
                "attempt": self.attempt,
                "recovery_seconds": recovery_s if recovery_s is not None else -1.0,
                "steps_lost": steps_lost if steps_lost is not None else -1,
            },
        ):
            pass
        log.info("resumed", run_id=self.run.id, from_step=self.resumed_from, recovery_s=recovery_s, steps_lost=steps_lost)
