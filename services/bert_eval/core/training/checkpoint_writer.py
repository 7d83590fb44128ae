"""Checkpoints off the training thread: copy the state to host memory, write it in the background.

The training thread only copies (model weights, optimizer and scheduler state, RNG states, the
trainer state with its log history) into host memory; a writer thread serializes them in the
Trainer's checkpoint layout (so `Trainer.train(resume_from_checkpoint=...)` reads them as its own),
and the CheckpointStore fsyncs and publishes them atomically under the run's attempt fence. One save is
in flight at a time: a save due while the previous one is still being written waits for it (that wait
is reported as the time the step was blocked). A write error surfaces on the training thread at the
next save or at `flush()`, so a failing volume fails the attempt instead of silently losing checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import Trainer
from transformers.trainer import OPTIMIZER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_NAME

from bert_eval.core.storage.checkpoints import Checkpoint, CheckpointStore

__all__ = ["BackgroundCheckpointWriter", "HostState", "SavedCheckpoint", "capture_host_state"]

RNG_STATE_NAME = "rng_state.pth"


@dataclass(frozen=True)
class HostState:
    """Everything a resume needs, in host memory, detached from the live model and optimizer."""

    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    trainer_state: str
    config: str
    copy_seconds: float


@dataclass(frozen=True)
class SavedCheckpoint:
    """A checkpoint the writer published, with how long it took and how long training waited for it."""

    checkpoint: Checkpoint
    seconds: float  # copy + write + fsync + publish
    blocked_seconds: float  # of which the training thread waited (copy, plus any wait for the previous write)
    bytes: int


def _to_host(value: Any, *, copy: bool = True) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=copy)
    if isinstance(value, dict):
        return {key: _to_host(item, copy=copy) for key, item in value.items()}
    if isinstance(value, list):
        return [_to_host(item, copy=copy) for item in value]
    if isinstance(value, tuple):
        return tuple(_to_host(item, copy=copy) for item in value)
    return value


def _host_weights(state_dict: dict[str, torch.Tensor], *, copy: bool) -> dict[str, torch.Tensor]:
    """Contiguous host tensors, one storage each (safetensors refuses tensors sharing memory, e.g. tied
    weights): a tensor whose storage another one already uses is copied even with `copy=False`."""
    weights, storages = {}, set()
    for name, tensor in state_dict.items():
        host = tensor.detach().to("cpu", copy=copy).contiguous()
        if host.untyped_storage().data_ptr() in storages:
            host = host.clone()
        storages.add(host.untyped_storage().data_ptr())
        weights[name] = host
    return weights


def _rng_states() -> dict[str, Any]:
    # The Trainer's own rng_state.pth layout (non-distributed).
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state()
    return states


def capture_host_state(trainer: Trainer, *, copy: bool = True) -> HostState:
    """Copy a trainer's resumable state to host memory (training thread; between optimizer steps).

    With `copy=False` tensors already in host memory are referenced, not copied: only for a save the
    training thread waits for before it touches the model or the optimizer again (a stop, a rung)."""
    started = time.monotonic()
    model = trainer.accelerator.unwrap_model(trainer.model, keep_torch_compile=False)
    weights = _host_weights(model.state_dict(), copy=copy)
    assert trainer.optimizer is not None and trainer.lr_scheduler is not None, "called before the Trainer built them"
    optimizer = _to_host(trainer.optimizer.state_dict(), copy=copy)
    scheduler = _to_host(trainer.lr_scheduler.state_dict(), copy=copy)
    trainer_state = json.dumps(dataclasses.asdict(trainer.state), indent=2, sort_keys=True) + "\n"
    return HostState(
        step=trainer.state.global_step,
        weights=weights,
        optimizer=optimizer,
        scheduler=scheduler,
        rng=_rng_states(),
        trainer_state=trainer_state,
        config=model.config.to_json_string(),
        copy_seconds=time.monotonic() - started,
    )


def write_checkpoint_files(state: HostState, directory: Path) -> None:
    """Serialize a HostState in the layout `Trainer._load_from_checkpoint` and friends read."""
    save_file(state.weights, str(directory / SAFE_WEIGHTS_NAME), metadata={"format": "pt"})
    (directory / CONFIG_NAME).write_text(state.config)
    torch.save(state.optimizer, directory / OPTIMIZER_NAME)
    torch.save(state.scheduler, directory / SCHEDULER_NAME)
    torch.save(state.rng, directory / RNG_STATE_NAME)
    (directory / TRAINER_STATE_NAME).write_text(state.trainer_state)


class BackgroundCheckpointWriter:
    """Writes and publishes HostStates through a CheckpointStore, on a thread (or inline)."""

    def __init__(
        self,
        store: CheckpointStore,
        *,
        manifest: dict[str, Any],
        on_saved: Callable[[SavedCheckpoint], None],
        background: bool = True,
        owner: str = "checkpoint writer",
    ) -> None:
        self._store, self._manifest, self._on_saved = store, manifest, on_saved
        self._owner = owner  # names the run in a write error ("run <id>")
        self._background = background
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: HostState) -> None:
        """Write and publish `state` as its step's checkpoint, in the background unless built with
        `background=False`. Waits for the save in flight first and raises its error, if it failed."""
        waited_from = time.monotonic()
        self.flush()
        blocked = state.copy_seconds + (time.monotonic() - waited_from)
        if not self._background:
            self._write(state, None)  # the training thread waits for all of it
            return
        self._thread = threading.Thread(
            target=self._write_catching, args=(state, blocked), name=f"checkpoint-{state.step}", daemon=True
        )
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Whether a save is being written now."""
        return self._thread is not None and self._thread.is_alive()

    def flush(self) -> None:
        """Wait for the save in flight; raise its error here if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _write_catching(self, state: HostState, blocked: float) -> None:
        try:
            self._write(state, blocked)
        except BaseException as exc:  # handed to the training thread by flush()
            self._error = exc

    def _write(self, state: HostState, blocked: float | None) -> None:
        started = time.monotonic()
        # The store's staging scope removes the staging directory whatever happens and turns a full or
        # read-only volume into one clear error; publish and prune go through the store's guard (the
        # run's attempt fence), so a superseded attempt's writer publishes and deletes nothing.
        with self._store.staging(step=state.step, owner=self._owner) as staging_root:
            directory = staging_root / f"checkpoint-{state.step}"
            directory.mkdir()
            write_checkpoint_files(state, directory)
            checkpoint = self._store.publish(directory, step=state.step, manifest=self._manifest)
        self._store.prune()
        size = sum(f.stat().st_size for f in checkpoint.path.rglob("*") if f.is_file())
        seconds = state.copy_seconds + time.monotonic() - started
        blocked = seconds if blocked is None else blocked
        self._on_saved(SavedCheckpoint(checkpoint=checkpoint, seconds=seconds, blocked_seconds=blocked, bytes=size))
