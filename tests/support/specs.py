"""The run specs tests submit: real SST-2 rows and the tiny random BERT, seconds per run on CPU.

One builder, `tiny_run`, and the hyperparameter sets the tests start from; each test overrides only
what its check needs."""

from __future__ import annotations

from pathlib import Path

from bert_eval.spec import RunSpec

# 256 rows, 16 steps, a checkpoint every 4: the integration tests' run.
TINY_TRAIN = {
    "epochs": 1,
    "batch_size": 16,
    "learning_rate": 1.0e-3,
    "max_seq_length": 64,
    "max_train_samples": 256,
    "seed": 7,
    "checkpoint_every_steps": 4,
    "logging_steps": 2,
}
# 192 rows, 12 steps, a checkpoint every 5: the core's unit tests' run.
CORE_TRAIN = {
    "epochs": 1,
    "batch_size": 16,
    "learning_rate": 1e-3,
    "max_train_samples": 192,
    "max_seq_length": 48,
    "seed": 3,
    "checkpoint_every_steps": 5,
}
# Overrides for a run long enough (250 steps) that a kill right after the first checkpoint lands mid-training.
LONG = dict(max_train_samples=2000, batch_size=8, checkpoint_every_steps=20, learning_rate=5e-4)


def tiny_run(
    model_dir: Path,
    run_id: str,
    *,
    base: dict[str, object] = TINY_TRAIN,
    eval_samples: int | None = 128,
    **train: object,
) -> dict:
    """A run spec as a user writes it: `base` hyperparameters with `train` overrides, evaluated on
    `eval_samples` validation rows (None: all of them)."""
    evaluation: dict[str, object] = {"split": "validation"}
    if eval_samples is not None:
        evaluation["max_eval_samples"] = eval_samples
    return {
        "run_id": run_id,
        "model": str(model_dir),
        "dataset": "glue/sst2",
        "train": {**base, **train},
        "eval": evaluation,
    }


def core_spec(model_dir: Path, run_id: str, *, eval_samples: int = 64, **train: object) -> RunSpec:
    """A parsed spec for calling the core directly: CORE_TRAIN with `train` overrides."""
    return RunSpec.model_validate(tiny_run(model_dir, run_id, base=CORE_TRAIN, eval_samples=eval_samples, **train))
