"""Fine-tuning with the Hugging Face Trainer: the fast path per device, background checkpoints, exact resume.

`fine_tune()` is callable from a test or a notebook with plain arguments. It reads top to bottom as
its steps: resolve (claim the run, find the checkpoint to resume from), load (model, tokenized rows),
plan (device, arguments, batching), train, summarize and publish. It reports every event once, to one
`TrainingObserver` (the progress callback is fed from the same events), and stops after publishing a
checkpoint when `should_stop()` turns true. The pieces live beside it: arguments.py, callbacks.py,
checkpoint_writer.py and observer.py here, and batching.py and tokenize.py in `core/data/`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import datasets
import torch
from opentelemetry import context as otel_context
from torch.utils.data import DataLoader, Dataset
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import seed_worker

from bert_eval import telemetry
from bert_eval.core.data.batching import BATCHING_KEY, BatchingScheme, SeededLengthGroupedSampler, padding_collator
from bert_eval.core.data.snapshot import TRAIN_TABLE
from bert_eval.core.data.tokenize import LENGTH, tokenized_split
from bert_eval.core.errors import InvalidInputError, TrainingInterrupted, naming_run
from bert_eval.core.modeling import load_for_classification
from bert_eval.core.records import CheckpointRef, SnapshotResult, TrainingProgress, TrainingSummary
from bert_eval.core.storage.checkpoints import Checkpoint, CheckpointStore
from bert_eval.core.storage.fsutil import atomic_write_json, discard_dir, publish_dir
from bert_eval.core.storage.journal import RunJournal
from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.storage.rundir import AttemptFence, claim_run_dir, completed_summary
from bert_eval.core.training.arguments import device_plan, training_arguments
from bert_eval.core.training.callbacks import CheckpointPolicy, CheckpointRecorder, ProgressEvents, StepHistory
from bert_eval.core.training.checkpoint_writer import BackgroundCheckpointWriter
from bert_eval.core.training.observer import Observers, ProgressCallback, ProgressTracker, TrainingObserver
from bert_eval.spec import RunSpec

__all__ = ["FineTuneRequest", "fine_tune"]

log = telemetry.get_logger(__name__)


@dataclass(frozen=True)
class FineTuneRequest:
    """One attempt at fine-tuning one run.

    Attributes
    ----------
    run : RunSpec
        The run: model, dataset, hyperparameters, checkpoint policy.
    snapshot : SnapshotResult
        The rows to train on (`create_snapshot` for this run).
    runs_dir : Path
        The runs volume; the run's files go to `RunLayout(runs_dir, run.id)`.
    device : str, default "cpu"
        Where to train (``"cpu"`` or ``"cuda"``; see `pick_device`).
    attempt : int, default 1
        This attempt's number, recorded in the journal and named in messages.
    previous : TrainingProgress, optional
        The previous attempt's last heartbeat: compared with the disk and used to report recovery time.
    scheduled_at : float, optional
        When this attempt was scheduled (epoch seconds); orders attempts for write fencing. None: now.
    stop_at_step : int, optional
        Pause at this step with a checkpoint there (a search rung) instead of training to the end.
    """

    run: RunSpec
    snapshot: SnapshotResult
    runs_dir: Path
    device: str = "cpu"
    attempt: int = 1
    # The previous attempt's last heartbeat, if any: where it stood when it was lost.
    previous: TrainingProgress | None = None
    # When this attempt was scheduled (Temporal's clock); orders attempts for write fencing. None: now.
    scheduled_at: float | None = None
    # Pause at this step (a search rung) with a checkpoint there, instead of training to the end. The
    # schedule is the full run's: resuming from that checkpoint continues exactly as an unpaused run.
    stop_at_step: int | None = None


def fine_tune(
    request: FineTuneRequest,
    *,
    on_progress: ProgressCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    observer: TrainingObserver | None = None,
) -> TrainingSummary:
    """Fine-tune `request.run` on its snapshot, resuming from its newest complete checkpoint, and publish
    the final model and summary into the run directory.

    Calling it again for a run whose training finished returns the recorded summary without training. A
    run with `stop_at_step` returns at that step with its checkpoint there standing in for the model.

    Parameters
    ----------
    request : FineTuneRequest
        The run, its snapshot, the runs volume and this attempt.
    on_progress : callable, optional
        Called with the run's `TrainingProgress` at every change (phase, step, log window, checkpoint),
        from the training thread or the checkpoint writer's thread.
    should_stop : callable, optional
        Polled at every step; once it returns True the run saves a checkpoint and raises
        `TrainingInterrupted`.
    observer : TrainingObserver, optional
        Receives every training event (beside the progress tracker), e.g. a worker's metrics.

    Returns
    -------
    TrainingSummary
        Steps, epochs, final loss, checkpoints saved, resumes, wall time and where the model is.

    Raises
    ------
    InvalidInputError
        If the run directory holds another spec's results, a checkpoint was written for a different
        configuration, or the spec exceeds the model's limits; retrying cannot help.
    TrainingInterrupted
        If `should_stop` asked to stop; the newest checkpoint is named, the run resumes from it.
    StaleAttemptError
        If a newer attempt of the run has claimed its directory; this attempt wrote nothing.
    OSError
        If the runs volume cannot be written (the message says what to do).
    """
    run = request.run
    layout = RunLayout(request.runs_dir, run.id)
    claim_run_dir(layout, run)
    if (done := completed_summary(layout, run)) is not None:
        log.info("training already completed; reusing it", run_id=run.id, steps=done.steps)
        return done.model_copy(update={"call_seconds": 0.0})

    started = time.monotonic()
    resume = _resolve(request, layout)
    if request.stop_at_step is not None and resume.latest is not None and resume.latest.step >= request.stop_at_step:
        log.info("already trained to the rung", run_id=run.id, step=request.stop_at_step)
        return _paused(request, layout, resume, seconds=0.0)
    tracker = ProgressTracker(
        run.id, attempt=request.attempt, resuming_from=resume.checkpoint_ref, on_change=on_progress
    )
    events = Observers(tracker, observer) if observer is not None else tracker
    events.phase("loading")
    loaded = _load(request)
    plan = _plan(request, layout, loaded, resume)
    training = _trainer(request, loaded, plan, resume, events, should_stop)
    state = _train(run.id, training, resume, request.attempt)
    if training.policy.stop_requested:
        newest = resume.store.latest_complete()
        events.phase("interrupted")
        raise TrainingInterrupted(run.id, state.global_step, str(newest.path) if newest else None)
    if training.policy.paused:
        events.phase("paused")
        return _paused(request, layout, resume, seconds=time.monotonic() - started)

    events.phase("saving")
    summary = _summarize(request, layout, state, resume.journal, train_samples=len(loaded.train_set))
    # Recorded with the summary, so it cannot include writing the final model (a fraction of a second).
    summary = summary.model_copy(update={"call_seconds": round(time.monotonic() - started, 3)})
    _publish(training.trainer, layout, resume.fence, run, summary)
    resume.journal.append("completed", step=state.global_step, attempt=request.attempt)
    events.phase("completed")
    return summary


@dataclass(frozen=True)
class _Resume:
    """This attempt's hold on the run directory, and the checkpoint it continues from (None: step 0)."""

    fence: AttemptFence
    journal: RunJournal
    store: CheckpointStore
    latest: Checkpoint | None

    @property
    def checkpoint_ref(self) -> CheckpointRef | None:
        return CheckpointRef(step=self.latest.step, path=str(self.latest.path)) if self.latest else None


def _resolve(request: FineTuneRequest, layout: RunLayout) -> _Resume:
    """Fence the run directory for this attempt and find the newest complete checkpoint to resume from."""
    run = request.run
    # From here on only the newest attempt may publish checkpoints, the model, the summary.
    fence = AttemptFence(layout, attempt=request.attempt, scheduled_at=request.scheduled_at)
    fence.claim()
    journal = RunJournal(layout.journal_file)
    journal.append("attempt", attempt=request.attempt, stop_at_step=request.stop_at_step)
    store = CheckpointStore(layout.checkpoints, keep=run.train.keep_checkpoints, guard=fence.publishing)
    latest = store.latest_complete()
    if latest is not None:
        _check_checkpoint_matches(latest, run)
    _compare_with_heartbeat(run.id, latest, request.previous)
    return _Resume(fence=fence, journal=journal, store=store, latest=latest)


@dataclass(frozen=True)
class _Loaded:
    tokenizer: PreTrainedTokenizerBase
    model: PreTrainedModel
    train_set: datasets.Dataset
    lengths: list[int]  # each training row's token count, for length-grouped batches


def _load(request: FineTuneRequest) -> _Loaded:
    """The model with a head for the snapshot's labels, and the training rows, tokenized."""
    run, hp = request.run, request.run.train
    set_seed(hp.seed)  # the classifier head's random init must be the same on every attempt
    try:
        tokenizer, model = load_for_classification(run.model, request.snapshot.dataset_schema)
    except InvalidInputError as exc:
        raise InvalidInputError(naming_run(run.id, str(exc))) from exc
    _check_sequence_length(run, model.config)
    # Saved with the final model, so evaluation truncates exactly as training did.
    tokenizer.model_max_length = hp.max_seq_length
    train_set = tokenized_split(
        request.snapshot, "train", tokenizer, max_length=hp.max_seq_length, cache=hp.cache_tokenization, run_id=run.id
    )
    lengths = train_set.with_format("arrow")[LENGTH].to_pylist()  # one column read, not row by row
    return _Loaded(tokenizer=tokenizer, model=model, train_set=train_set.remove_columns(LENGTH), lengths=lengths)


@dataclass(frozen=True)
class _Plan:
    args: TrainingArguments
    scheme: BatchingScheme


def _plan(request: FineTuneRequest, layout: RunLayout, loaded: _Loaded, resume: _Resume) -> _Plan:
    """Trainer arguments for the device, and the batching."""
    run, hp = request.run, request.run.train
    device = device_plan(hp, request.device, bf16_supported=request.device == "cuda" and torch.cuda.is_bf16_supported())
    # A resumed run keeps the batching its checkpoint was written with (a checkpoint from before length
    # grouping has no marker and continues with that release's order and padding).
    if resume.latest is None:
        scheme = BatchingScheme.for_new_run(group_by_length=device.group_by_length, padding=device.padding)
    else:
        scheme = BatchingScheme.of_checkpoint(resume.latest.manifest())
        if not resume.latest.manifest().get(BATCHING_KEY):
            log.info(
                "checkpoint predates the batching marker; resuming with the earlier batching",
                run_id=run.id,
                step=resume.latest.step,
                **scheme.to_manifest(),
            )
    return _Plan(args=training_arguments(hp, device, output_dir=layout.checkpoints), scheme=scheme)


@dataclass(frozen=True)
class _Training:
    trainer: _FastTrainer
    policy: CheckpointPolicy
    writer: BackgroundCheckpointWriter
    recorder: CheckpointRecorder


def _trainer(
    request: FineTuneRequest,
    loaded: _Loaded,
    plan: _Plan,
    resume: _Resume,
    events: TrainingObserver,
    should_stop: Callable[[], bool] | None,
) -> _Training:
    """The Trainer with our callbacks, and the checkpoint writer they save through."""
    run, hp = request.run, request.run.train
    recorder = CheckpointRecorder(run_id=run.id, journal=resume.journal, observer=events)
    writer = BackgroundCheckpointWriter(
        resume.store,
        manifest={"fingerprint": run.fingerprint(), "model": run.model, BATCHING_KEY: plan.scheme.to_manifest()},
        on_saved=recorder,
        background=hp.background_checkpoints,
        owner=f"run {run.id}",
    )
    history = StepHistory(run_id=run.id, logging_steps=hp.logging_steps, observer=events)
    policy = CheckpointPolicy(
        run_id=run.id,
        every_steps=hp.checkpoint_every_steps,
        every_seconds=hp.checkpoint_every_seconds,
        should_stop=should_stop or (lambda: False),
        history=history,
        writer=writer,
        stop_at_step=request.stop_at_step,
    )
    progress = ProgressEvents(
        run_id=run.id,
        attempt=request.attempt,
        observer=events,
        journal=resume.journal,
        resumed_from=resume.latest.step if resume.latest else None,
        previous=request.previous,
    )
    trainer = _FastTrainer(
        model=loaded.model,
        args=plan.args,
        train_dataset=loaded.train_set,
        data_collator=padding_collator(loaded.tokenizer, padding=plan.scheme.padding, max_length=hp.max_seq_length),
        processing_class=loaded.tokenizer,
        # Progress first (resume figures, step events), then the history, then the policy (flushes it).
        callbacks=[progress, history, policy],
        history=history,
        lengths=loaded.lengths if plan.scheme.group_by_length else None,
    )
    history.bind(trainer)
    policy.bind(trainer)
    trainer.remove_callback(PrinterCallback)  # our callbacks log progress; no raw dicts on stdout
    return _Training(trainer=trainer, policy=policy, writer=writer, recorder=recorder)


def _train(run_id: str, training: _Training, resume: _Resume, attempt: int) -> TrainerState:
    """Run the Trainer (from the resume checkpoint, if any); every checkpoint in flight is published before
    this returns or raises."""
    latest, writer = resume.latest, training.writer
    if latest is not None:
        log.info("resuming from checkpoint", run_id=run_id, step=latest.step, path=str(latest.path))
    try:
        with telemetry.tracer().start_as_current_span(
            "train",
            attributes={"run_id": run_id, "attempt": attempt, "resumed_from_step": latest.step if latest else -1},
        ):
            training.recorder.train_context = otel_context.get_current()
            training.trainer.train(resume_from_checkpoint=str(latest.path) if latest else None)
    except BaseException:
        with contextlib.suppress(Exception):  # publish what is in flight; the training error is the one to report
            writer.flush()
        raise
    writer.flush()  # a checkpoint in flight is published (or its write error raised) before we go on
    return training.trainer.state


def _summarize(
    request: FineTuneRequest, layout: RunLayout, state: TrainerState, journal: RunJournal, *, train_samples: int
) -> TrainingSummary:
    run, hp = request.run, request.run.train
    losses = [entry["loss"] for entry in state.log_history if "loss" in entry]
    final_window = losses[-hp.logging_steps :]
    resumes = journal.of_kind("resume")
    return TrainingSummary(
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
        train_samples=train_samples,
        dataset_schema=request.snapshot.dataset_schema,
        model_dir=str(layout.model_dir),
        snapshot_id=request.snapshot.snapshot_id,
    )


def _paused(request: FineTuneRequest, layout: RunLayout, resume: _Resume, *, seconds: float) -> TrainingSummary:
    """The summary of a run paused at `stop_at_step`: its checkpoint there stands in for the final model."""
    run, step = request.run, request.stop_at_step
    checkpoint = next((c for c in resume.store.complete() if c.step == step), None)
    if checkpoint is None:
        raise InvalidInputError(
            f"run {run.id}: has no checkpoint at rung step {step} (its checkpoints are at steps "
            f"{[c.step for c in resume.store.complete()]}); delete {layout.root} to train it again"
        )
    state = TrainerState.load_from_json(str(checkpoint.path / TRAINER_STATE_NAME))
    resume.journal.append("paused", step=step, attempt=request.attempt)
    summary = _summarize(request, layout, state, resume.journal, train_samples=request.snapshot.splits[TRAIN_TABLE])
    return summary.model_copy(
        update={
            "model_dir": str(checkpoint.path),
            "rung_checkpoint": str(checkpoint.path),
            "call_seconds": round(seconds, 3),
        }
    )


def _publish(trainer: Trainer, layout: RunLayout, fence: AttemptFence, run: RunSpec, summary: TrainingSummary) -> None:
    """Final model, loss history and summary, published only while this attempt is the current one."""
    staging = layout.root / f".model-staging-{uuid.uuid4().hex[:8]}"
    try:
        trainer.save_model(str(staging))
        with fence.publishing("publish the final model and summary"):
            # An existing model was left by an attempt that died between publishing it and the summary.
            publish_dir(staging, layout.model_dir, replace=True)
            atomic_write_json(layout.history_file, {"run_id": run.id, "log_history": trainer.state.log_history})
            atomic_write_json(
                layout.summary_file, {"fingerprint": run.fingerprint(), "summary": summary.model_dump(mode="json")}
            )
    finally:
        discard_dir(staging)


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


class _FastTrainer(Trainer):
    """The Trainer with two overrides, both documented override points:

    - `training_step`: hands each step's loss tensor to StepHistory (no callback sees it without a host sync);
    - `get_train_dataloader`: batches rows of similar length with a seeded sampler, so a resume replays the
      same batches (the Trainer's own length-grouped sampler draws from the global RNG).
    """

    def __init__(self, *args: Any, history: StepHistory, lengths: list[int] | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._history = history
        self._lengths = lengths

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """The Trainer's step; its loss tensor also goes to the step history (read at logging time)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._history.record(loss, inputs)
        return loss

    def get_train_dataloader(self) -> DataLoader:
        """The Trainer's loader, or with row lengths known, one over the seeded length-grouped sampler."""
        if self._lengths is None:
            return super().get_train_dataloader()
        args = self.args
        batch_size = args.train_batch_size
        sampler = SeededLengthGroupedSampler(
            self._lengths, batch_size=batch_size * args.gradient_accumulation_steps, seed=args.data_seed or args.seed
        )
        workers = args.dataloader_num_workers
        loader = DataLoader(
            cast(Dataset, self.train_dataset),  # the datasets.Dataset given at construction (indexable, sized)
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
