"""Real fine-tunes of the pretrained MiniLM on a small SST-2 slice, one per seed (the core's own fine_tune
and evaluate, no server): the runs the seed-noise checks compare."""

from __future__ import annotations

from pathlib import Path

from bert_eval.core.evaluation.batched import evaluate
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from support.core import core_snapshot
from support.specs import core_spec

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def seed_accuracies(runs_dir: Path, data_dir: Path, name: str, seeds: range, **train: object) -> list[float]:
    """Validation accuracy (200 rows) of one run per seed; each seed also draws its own 96 training rows
    (shuffle_before_select): data-order and init noise. `train` overrides the hyperparameters."""
    values = []
    for seed in seeds:
        hyper = dict(
            seed=seed, max_train_samples=96, max_seq_length=32, learning_rate=1e-4, checkpoint_every_steps=None
        )
        spec = core_spec(Path(MINILM), f"{name}-s{seed}", **{**hyper, **train}).model_copy(update={"model": MINILM})
        spec = spec.model_copy(update={"primary_eval": spec.primary_eval.model_copy(update={"max_eval_samples": 200})})
        snapshot = core_snapshot(spec, runs_dir, data_dir)
        summary = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
        result = evaluate(
            run_id=spec.id, model_dir=summary.model_dir, snapshot=snapshot, request=spec.primary_eval, runs_dir=runs_dir
        )
        values.append(result.metrics["accuracy"])
    return values
