"""Fine-tuning with the Hugging Face Trainer: the fast path per device, background checkpoints, exact resume.

`fine_tune()` is callable from a test or a notebook with plain arguments. It reports progress through
one callback (`on_progress`), metrics-worthy events through a `TrainingObserver`, and stops (after
publishing a checkpoint) when `should_stop()` turns true. The pieces live beside it:
training_args.py (hyperparameters + device → TrainingArguments), batching.py (length-grouped,
dynamically padded batches), tokenize.py (tokenization cached per snapshot), training_callbacks.py
(progress, per-step history, checkpoint policy) and checkpoint_writer.py (saves off the training thread).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from opentelemetry import context as otel_context
from torch.utils.data import DataLoader
from transformers import PrinterCallback, Trainer, set_seed
from transformers.trainer_utils import seed_worker

from bert_eval import telemetry
from bert_eval.core.batching import BATCHING_KEY, BatchingScheme, SeededLengthGroupedSampler, padding_collator
from bert_eval.core.checkpoint_writer import BackgroundCheckpointWriter, SavedCheckpoint
from bert_eval.core.checkpoints import Checkpoint, CheckpointStore
from bert_eval.core.errors import InvalidInputError, TrainingInterrupted
from bert_eval.core.fsutil import atomic_write_json, discard_dir, publish_dir
from bert_eval.core.journal import RunJournal
from bert_eval.core.layout import RunLayout
from bert_eval.core.modeling import load_for_classification
from bert_eval.core.observer import CheckpointEvent, TrainingObserver
from bert_eval.core.rundir import AttemptFence, claim_run_dir, completed_summary
from bert_eval.core.tokenize import LENGTH, tokenized_split
from bert_eval.core.training_args import device_plan, training_arguments
from bert_eval.core.training_callbacks import CheckpointPolicy, ProgressCallback, ProgressReporter, Reporter, StepHistory
from bert_eval.types import CheckpointRef, RunSpec, SnapshotResult, TrainingProgress, TrainingSummary

__all__ = ["FineTuneRequest", "fine_tune"]

log = telemetry.get_logger(__name__)


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
    observer: TrainingObserver | None = None,
) -> TrainingSummary:
    run, hp = request.run, request.run.train
    observer = observer or TrainingObserver()
    layout = RunLayout(request.runs_dir, run.id)
    claim_run_dir(layout, run)
    if (done := completed_summary(layout, run)) is not None:
        log.info("training already completed; reusing it", run_id=run.id, steps=done.steps)
        return done

    report = Reporter(run.id, request.attempt, on_progress)
    report.update(phase="loading")
    observer.phase("loading")
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
    # Digest-verified rows (also on a tokenization-cache hit).
    train_set = tokenized_split(
        request.snapshot, "train", tokenizer, max_length=hp.max_seq_length, cache=hp.cache_tokenization, run_id=run.id
    )
    lengths = train_set.with_format("arrow")[LENGTH].to_pylist()  # one column read, not row by row
    train_set = train_set.remove_columns(LENGTH)

    plan = device_plan(hp, request.device, bf16_supported=request.device == "cuda" and torch.cuda.is_bf16_supported())
    args = training_arguments(hp, plan, output_dir=layout.checkpoints)
    # A resumed run keeps the batching its checkpoint was written with (a checkpoint of the release
    # before length grouping has no marker and continues that release's order and padding).
    scheme = (
        BatchingScheme.of_checkpoint(latest.manifest())
        if latest is not None
        else BatchingScheme.for_new_run(group_by_length=plan.group_by_length, padding=plan.padding)
    )
    if latest is not None and not latest.manifest().get(BATCHING_KEY):
        log.info(
            "checkpoint predates the batching marker; resuming with the previous release's batching",
            run_id=run.id, step=latest.step, **scheme.to_manifest(),
        )

    train_context: list[Any] = []  # the `train` span's context, for the writer thread's spans

    def saved(event: SavedCheckpoint) -> None:  # on the writer's thread
        ref = CheckpointRef(step=event.checkpoint.step, path=str(event.checkpoint.path))
        seconds, blocked = round(event.seconds, 3), round(event.blocked_seconds, 3)
        # The save ran across two threads; its span covers copy + write + publish, under `train`.
        ended_ns = time.time_ns()
        telemetry.tracer().start_span(
            "checkpoint.save",
            context=train_context[0] if train_context else None,
            attributes={"run_id": run.id, "step": ref.step, "blocked_seconds": blocked, "bytes": event.bytes},
            start_time=ended_ns - int(event.seconds * 1e9),
        ).end(end_time=ended_ns)
        journal.append("checkpoint", step=ref.step, seconds=seconds, blocked_seconds=blocked, bytes=event.bytes, path=ref.path)
        observer.checkpoint_saved(
            CheckpointEvent(step=ref.step, path=ref.path, seconds=event.seconds, blocked_seconds=event.blocked_seconds, bytes=event.bytes)
        )
        report.update(last_checkpoint=ref)
        log.info("checkpoint saved", run_id=run.id, step=ref.step, seconds=seconds, blocked_s=blocked, bytes=event.bytes)

    writer = BackgroundCheckpointWriter(
        store,
        manifest={"fingerprint": run.fingerprint(), "model": run.model, BATCHING_KEY: scheme.to_manifest()},
        on_saved=saved,
        background=hp.background_checkpoints,
        owner=f"run {run.id}",
    )
    history = StepHistory(run_id=run.id, logging_steps=hp.logging_steps, report=report, observer=observer)
    policy = CheckpointPolicy(
        run_id=run.id,
        every_steps=hp.checkpoint_every_steps,
        every_seconds=hp.checkpoint_every_seconds,
        should_stop=should_stop or (lambda: False),
        history=history,
        writer=writer,
    )
    progress = ProgressReporter(
        run_id=run.id,
        attempt=request.attempt,
        report=report,
        observer=observer,
        journal=journal,
        resumed_from=latest.step if latest else None,
        previous=request.previous,
    )
    trainer = _FastTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=padding_collator(tokenizer, padding=scheme.padding, max_length=hp.max_seq_length),
        processing_class=tokenizer,
        # Progress first (resume figures, step reports), then the history, then the policy (flushes it).
        callbacks=[progress, history, policy],
        history=history,
        lengths=lengths if scheme.group_by_length else None,
    )
    history.bind(trainer)
    policy.bind(trainer)
    trainer.remove_callback(PrinterCallback)  # our callbacks log progress; no raw dicts on stdout
    if latest is not None:
        log.info("resuming from checkpoint", run_id=run.id, step=latest.step, path=str(latest.path))
        report.update(last_checkpoint=CheckpointRef(step=latest.step, path=str(latest.path)), resumed_from_step=latest.step)
    try:
        with telemetry.tracer().start_as_current_span(
            "train", attributes={"run_id": run.id, "attempt": request.attempt, "resumed_from_step": latest.step if latest else -1}
        ):
            train_context.append(otel_context.get_current())
            trainer.train(resume_from_checkpoint=str(latest.path) if latest else None)
    except BaseException:
        with contextlib.suppress(Exception):  # publish what is in flight; the training error is the one to report
            writer.flush()
        raise
    writer.flush()  # a checkpoint in flight is published (or its write error raised) before we go on

    state = trainer.state
    if policy.stop_requested:
        newest = store.latest_complete()
        observer.phase("interrupted")
        raise TrainingInterrupted(run.id, state.global_step, str(newest.path) if newest else None)

    report.update(phase="saving", step=state.global_step)
    observer.phase("saving")
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
    observer.phase("completed")
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


class _FastTrainer(Trainer):
    """Trainer that hands each step's loss to the StepHistory and batches rows of similar length.

    Only public, documented override points: `training_step` and `get_train_dataloader`.
    """

    def __init__(self, *args: Any, history: StepHistory, lengths: list[int] | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._history = history
        self._lengths = lengths

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._history.record(loss, inputs)
        return loss

    def get_train_dataloader(self) -> DataLoader:
        if self._lengths is None:
            return super().get_train_dataloader()
        args = self.args
        batch_size = args.train_batch_size
        sampler = SeededLengthGroupedSampler(self._lengths, batch_size=batch_size * args.gradient_accumulation_steps, seed=args.data_seed or args.seed)
        workers = args.dataloader_num_workers
        loader = DataLoader(
            self.train_dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=self.data_collator,
            num_workers=workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if workers > 0 else None,
            drop_last=args.dataloader_drop_last,
            worker_init_fn=partial(seed_worker, num_workers=workers, rank=args.process_index),
        )
        return self.accelerator.prepare(loader)
