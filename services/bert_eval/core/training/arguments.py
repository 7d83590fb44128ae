"""Hyperparameters + device → Trainer arguments: one pure function, no I/O, no torch state.

The fast path is chosen per device here and nowhere else. On CUDA: bf16 autocast, dataloader workers
with pinned memory, batches padded to a multiple of 8 (on CPU: to their longest row, see
core/data/batching.py: dynamic_padding). On every device: torch's fused AdamW kernel instead of the per-tensor
loop (its timings are in docs/performance.md), no per-step host reads (the loss is read at logging time, see
core/training/finetuning.py), and no Trainer-side checkpointing or logging (the background checkpoint writer
and the training observer do both). Each knob can be turned off in the run's TrainHyperparameters.

Batch size and learning rate: the default batch stays 32 (lr 5e-5). A larger batch on a GPU keeps
accuracy when the learning rate grows with the square root of the batch: lr = 5e-5 * sqrt(batch / 32),
e.g. 1.4e-4 at batch 256 (`scaled_learning_rate`); `make bench-gpu` checks dev accuracy at that pair
against batch 32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from transformers import TrainingArguments

from bert_eval.core.data.batching import dynamic_padding
from bert_eval.spec import TrainHyperparameters

__all__ = ["DevicePlan", "device_plan", "scaled_learning_rate", "training_arguments"]

REFERENCE_BATCH = 32
REFERENCE_LEARNING_RATE = 5e-5


@dataclass(frozen=True)
class DevicePlan:
    """Which speed features a run uses on a device (what the knobs allow and the device supports)."""

    device: str
    bf16: bool
    fused_optimizer: bool
    dataloader_workers: int
    pin_memory: bool
    padding: str  # a BatchingScheme padding: "multiple-of-8", "longest" or "max_length"
    group_by_length: bool
    torch_compile: bool


def device_plan(hp: TrainHyperparameters, device: str, *, bf16_supported: bool = False) -> DevicePlan:
    """The speed features a run uses on `device`: the knobs in `hp`, limited to what the device supports
    (bf16 and pinned memory on CUDA only; dataloader workers default to 2 on CUDA, 0 on CPU)."""
    cuda = device.startswith("cuda")
    workers = hp.dataloader_workers if hp.dataloader_workers is not None else (2 if cuda else 0)
    return DevicePlan(
        device=device,
        bf16=cuda and bf16_supported and hp.bf16,
        fused_optimizer=hp.fused_optimizer,  # pick_device gives "cuda" or "cpu": torch has the kernel on both
        dataloader_workers=workers,
        pin_memory=cuda,
        padding=dynamic_padding(device, enabled=hp.dynamic_padding),
        group_by_length=hp.group_by_length,
        torch_compile=hp.torch_compile,
    )


def scaled_learning_rate(
    batch_size: int, *, base: float = REFERENCE_LEARNING_RATE, base_batch: int = REFERENCE_BATCH
) -> float:
    """Square-root learning-rate scaling for a batch other than the reference one."""
    return base * math.sqrt(batch_size / base_batch)


def training_arguments(hp: TrainHyperparameters, plan: DevicePlan, *, output_dir: Path) -> TrainingArguments:
    """The Trainer's arguments for `hp` on `plan`, writing under `output_dir`; the Trainer's own logging and
    checkpointing are off (the observer and the background writer do both)."""
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=hp.batch_size,
        learning_rate=hp.learning_rate,
        weight_decay=hp.weight_decay,
        # A float below 1 is read as a fraction of the total steps.
        warmup_steps=hp.warmup_ratio,
        num_train_epochs=hp.epochs,
        lr_scheduler_type="linear",
        optim="adamw_torch_fused" if plan.fused_optimizer else "adamw_torch",
        # The observer logs (reading the on-device loss every `logging_steps`) and the background
        # writer checkpoints; the Trainer's own versions would read the device or block the step. (Its step
        # logging would also add entries to the history the run's summary reads: `report_to` integrations
        # receive the run's arguments and its final training metrics.)
        logging_strategy="no",
        save_strategy="no",
        # Its NaN filter reads every step's loss on the host: a device sync per step.
        logging_nan_inf_filter=False,
        eval_strategy="no",
        report_to=list(hp.report_to) or "none",
        disable_tqdm=True,
        log_level="error",
        seed=hp.seed,
        data_seed=hp.seed,
        use_cpu=plan.device == "cpu",
        bf16=plan.bf16,
        dataloader_num_workers=plan.dataloader_workers,
        dataloader_pin_memory=plan.pin_memory,
        dataloader_persistent_workers=plan.dataloader_workers > 0,
        torch_compile=plan.torch_compile,
    )
