"""The fine-tune's Trainer callbacks, one job each, all through public Trainer hooks.

- `ProgressEvents`: start, step and resume events to the observer (resume figures in the journal
  too), epoch spans.
- `StepHistory`: every step's loss, kept on the device and read once per logging window (no per-step
  host sync), written into the Trainer's log history as one entry per step. A checkpoint flushes it
  first, so a resumed run's history (and final loss) equals an uninterrupted one's.
- `CheckpointPolicy`: saves on time (default), on steps (optional), on a stop request and at a search
  rung (where it pauses the run), through the background checkpoint writer.
- `CheckpointRecorder`: what happens once a checkpoint is published (journal, span, event, log line).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from bert_eval import telemetry
from bert_eval.core.records import TrainingProgress
from bert_eval.core.storage.journal import RunJournal
from bert_eval.core.training.checkpoint_writer import (
    BackgroundCheckpointWriter,
    SavedCheckpoint,
    capture_host_state,
)
from bert_eval.core.training.observer import CheckpointEvent, LogWindow, ResumeEvent, TrainingObserver

__all__ = ["CheckpointPolicy", "CheckpointRecorder", "ProgressEvents", "StepHistory"]

log = telemetry.get_logger(__name__)


class ProgressEvents(TrainerCallback):
    """Start, step and resume events to the observer, the resume also to the journal; one span per epoch.

    `resumed_from` is the checkpoint step this attempt continues from (None: a fresh start); `previous`
    is the previous attempt's last heartbeat, from which the recovery time and the steps lost are reported.
    """

    def __init__(
        self,
        *,
        run_id: str,
        attempt: int,
        observer: TrainingObserver,
        journal: RunJournal,
        resumed_from: int | None,
        previous: TrainingProgress | None,
    ) -> None:
        self.run_id, self.attempt = run_id, attempt
        self.observer, self.journal = observer, journal
        self.resumed_from, self.previous = resumed_from, previous
        self._first_step_seen = False
        self._epoch_span: Any = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Report the start of training (total steps, starting step) and the training phase."""
        self.observer.started(state.max_steps, state.global_step)
        self.observer.phase("training")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Report the step; after the first step of a resumed attempt, report the resume."""
        if not self._first_step_seen:
            self._first_step_seen = True
            if self.resumed_from is not None:
                self._record_resume()
        self.observer.step(state.global_step, round(float(state.epoch or 0.0), 4))

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Open the epoch's span (closing the previous one)."""
        self._end_epoch_span()
        self._epoch_span = telemetry.tracer().start_span(
            "epoch",
            attributes={"run_id": self.run_id, "epoch": int(state.epoch or 0), "start_step": state.global_step},
        )

    def on_epoch_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Close the epoch's span."""
        self._end_epoch_span()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Close the last epoch's span."""
        self._end_epoch_span()

    def _end_epoch_span(self) -> None:
        if self._epoch_span is not None:
            self._epoch_span.end()
            self._epoch_span = None

    def _record_resume(self) -> None:
        recovery_s = steps_lost = None
        if self.previous is not None:
            if self.previous.heartbeat_time is not None:
                recovery_s = round(time.time() - self.previous.heartbeat_time, 3)
            steps_lost = max(self.previous.step - (self.resumed_from or 0), 0)
        self.observer.resumed(
            ResumeEvent(
                from_step=self.resumed_from or 0,
                attempt=self.attempt,
                recovery_seconds=recovery_s,
                steps_lost=steps_lost,
            )
        )
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
                "run_id": self.run_id,
                "from_step": self.resumed_from or 0,
                "attempt": self.attempt,
                "recovery_seconds": recovery_s if recovery_s is not None else -1.0,
                "steps_lost": steps_lost if steps_lost is not None else -1,
            },
        ):
            pass
        log.info(
            "resumed", run_id=self.run_id, from_step=self.resumed_from, recovery_s=recovery_s, steps_lost=steps_lost
        )


class StepHistory(TrainerCallback):
    """Per-step losses on the device, drained into `state.log_history` every `logging_steps` steps."""

    def __init__(self, *, run_id: str, logging_steps: int, observer: TrainingObserver) -> None:
        self.run_id, self.logging_steps = run_id, logging_steps
        self.observer = observer
        self._losses: list[torch.Tensor] = []
        self._tokens: list[torch.Tensor] = []
        self._rows = 0
        self._steps: list[tuple[int, float, float]] = []  # (step, epoch, learning rate), host values
        self._learning_rate = 0.0
        self._window_started = time.monotonic()
        self._trainer: Trainer | None = None

    def bind(self, trainer: Trainer) -> None:
        """Attach the Trainer whose learning-rate scheduler the history reads."""
        self._trainer = trainer

    def record(self, loss: torch.Tensor, inputs: dict[str, Any]) -> None:
        """Called by the trainer after each training step's backward pass; reads nothing from the device."""
        self._losses.append(loss.detach())
        mask = inputs.get("attention_mask")
        if mask is not None:
            self._tokens.append(mask.sum())
            self._rows += int(mask.shape[0])

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Start the first logging window's clock."""
        self._window_started = time.monotonic()

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        """Note the learning rate this step used (before the scheduler steps)."""
        # Before the scheduler steps: the rate this step used (a host value, no sync).
        assert self._trainer is not None and self._trainer.lr_scheduler is not None
        self._learning_rate = float(self._trainer.lr_scheduler.get_last_lr()[0])

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Buffer the step; at the end of a logging window, flush the window."""
        self._steps.append((state.global_step, round(float(state.epoch or 0.0), 4), self._learning_rate))
        if state.global_step % self.logging_steps == 0:
            self.flush(state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Flush the last, possibly partial, logging window."""
        self.flush(state)

    def flush(self, state: TrainerState) -> None:
        """Read the buffered losses (one device sync) and append one history entry per step."""
        if not self._steps:
            return
        losses = torch.stack(self._losses[-len(self._steps) :]).float().cpu().tolist()
        tokens = float(torch.stack(self._tokens).sum().item()) if self._tokens else 0.0
        for (step, epoch, learning_rate), loss in zip(self._steps, losses, strict=True):
            entry = {"step": step, "epoch": epoch, "loss": round(loss, 6), "learning_rate": learning_rate}
            state.log_history.append(entry)
        now = time.monotonic()
        elapsed = max(now - self._window_started, 1e-9)
        step, _, learning_rate = self._steps[-1]
        window = LogWindow(
            step=step,
            loss=losses[-1],
            mean_loss=sum(losses) / len(losses),
            learning_rate=learning_rate,
            samples_per_s=self._rows / elapsed,
            tokens_per_s=tokens / elapsed,
        )
        self._losses, self._tokens, self._steps, self._rows = [], [], [], 0
        self._window_started = now
        self.observer.logged(window)
        log.info(
            "training progress",
            run_id=self.run_id,
            step=step,
            total_steps=state.max_steps,
            loss=round(window.mean_loss, 5),
            samples_per_s=round(window.samples_per_s, 2),
            tokens_per_s=round(window.tokens_per_s, 1),
        )


class CheckpointPolicy(TrainerCallback):
    """Decides when to checkpoint (time, steps, stop request, search rung) and hands the state to the writer.

    After a checkpoint on a stop request it sets `stop_requested`, at `stop_at_step` it sets `paused`; both
    stop the Trainer once the checkpoint is published.
    """

    def __init__(
        self,
        *,
        run_id: str,
        every_steps: int | None,
        every_seconds: float | None,
        should_stop: Callable[[], bool],
        history: StepHistory,
        writer: BackgroundCheckpointWriter,
        stop_at_step: int | None = None,
    ) -> None:
        self.run_id = run_id
        self.stop_at_step = stop_at_step
        self.paused = False  # stopped at stop_at_step, with a checkpoint there
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.should_stop, self.history, self.writer = should_stop, history, writer
        self.stop_requested = False
        self._last_save = time.monotonic()
        self._trainer: Trainer | None = None

    def bind(self, trainer: Trainer) -> None:
        """Attach the Trainer whose state `save` captures."""
        self._trainer = trainer

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Start the time-based checkpoint clock."""
        self._last_save = time.monotonic()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        """Save a checkpoint when one is due; on a stop request or at the rung, wait for it and stop."""
        stop = not self.stop_requested and self.should_stop()
        pause = self.stop_at_step is not None and state.global_step == self.stop_at_step < state.max_steps
        due = (
            stop
            or pause
            or (self.every_steps is not None and state.global_step % self.every_steps == 0)
            # Bound the work a crash can lose, whatever the step rate.
            or (self.every_seconds is not None and time.monotonic() - self._last_save >= self.every_seconds)
        )
        if due:
            # The training thread waits for a stop's or a rung's checkpoint before it goes on: no host copy.
            self.save(state, copy=not (stop or pause))
        if stop:
            self.stop_requested = True
            self.writer.flush()  # the checkpoint is published before the attempt reports the stop
            control.should_training_stop = True
            log.info("stop requested; checkpoint saved, stopping", run_id=self.run_id, step=state.global_step)
        elif pause:
            self.paused = True
            self.writer.flush()
            control.should_training_stop = True
            log.info("reached the rung; checkpoint saved, pausing", run_id=self.run_id, step=state.global_step)

    def save(self, state: TrainerState, *, copy: bool = True) -> None:
        """Flush the step history, then hand the training state to the background writer: a host copy, or
        with `copy=False` (the caller flushes the writer before training goes on) the host tensors themselves."""
        assert self._trainer is not None
        self.history.flush(state)  # the checkpoint's log history must reach its step
        self.writer.save(capture_host_state(self._trainer, copy=copy))
        self._last_save = time.monotonic()


class CheckpointRecorder:
    """Called (on the writer's thread) once a checkpoint is published: journal, span, event, log line."""

    def __init__(self, *, run_id: str, journal: RunJournal, observer: TrainingObserver) -> None:
        self.run_id, self.journal, self.observer = run_id, journal, observer
        self.train_context: Any = None  # the `train` span's context: checkpoint spans nest under it

    def __call__(self, saved: SavedCheckpoint) -> None:
        event = CheckpointEvent(
            step=saved.checkpoint.step,
            path=str(saved.checkpoint.path),
            seconds=saved.seconds,
            blocked_seconds=saved.blocked_seconds,
            bytes=saved.bytes,
        )
        seconds, blocked = round(event.seconds, 3), round(event.blocked_seconds, 3)
        # The save ran across two threads: the span covers copy + write + publish.
        ended_ns = time.time_ns()
        telemetry.tracer().start_span(
            "checkpoint.save",
            context=self.train_context,
            attributes={"run_id": self.run_id, "step": event.step, "blocked_seconds": blocked, "bytes": event.bytes},
            start_time=ended_ns - int(event.seconds * 1e9),
        ).end(end_time=ended_ns)
        self.journal.append(
            "checkpoint", step=event.step, seconds=seconds, blocked_seconds=blocked, bytes=event.bytes, path=event.path
        )
        self.observer.checkpoint_saved(event)
        log.info(
            "checkpoint saved",
            run_id=self.run_id,
            step=event.step,
            seconds=seconds,
            blocked_s=blocked,
            bytes=event.bytes,
        )
