"""Helpers for tests that evaluate saved models: a tiny classifier (or regressor) with its head saved, a
small regression dataset, and an evaluation of a model under a run id."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from bert_eval.core.evaluation.batched import evaluate
from bert_eval.core.records import EvalResult, SnapshotResult
from bert_eval.spec import RunSpec
from support.core import core_snapshot


def saved_head_model(tiny_model_dir: Path, out: Path, data_dir: Path, *, seed: int, num_labels: int = 2) -> Path:
    """The tiny BERT with a head drawn from `seed` whose outputs vary from row to row, saved with it.

    A random BERT's pooled output barely differs between sentences, so a random head gives every row the
    same class. This head reads the pooled output along a random direction, centred and scaled on SST-2
    validation sentences, so about half the rows get each class (or the scores spread out)."""
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_model_dir), num_labels=num_labels).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    sentences = _validation(data_dir)["sentence"].head(256).tolist()
    with torch.no_grad():
        pooled = model.bert(**tokenizer(sentences, padding=True, truncation=True, return_tensors="pt")).pooler_output
        direction = torch.randn(pooled.shape[1])
        scores = pooled @ direction
        weight, bias = direction / scores.std(), -scores.median() / scores.std()
        if num_labels == 1:
            model.classifier.weight.copy_(weight[None, :])
            model.classifier.bias.fill_(bias)
        else:
            model.classifier.weight.copy_(torch.stack([-weight, weight]))
            model.classifier.bias.copy_(torch.stack([-bias, bias]))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _validation(data_dir: Path) -> pd.DataFrame:
    return pd.read_csv(data_dir / "glue" / "sst2" / "validation.tsv", sep="\t", quoting=3, keep_default_na=False)


def regression_dataset(data_dir: Path, out: Path, *, rows: int = 80) -> Path:
    """SST-2 sentences with a float score (the sentiment label plus a fraction): a regression task."""
    frame = _validation(data_dir).head(2 * rows)
    frame["label"] = frame["label"].astype(float) * 4 + (frame.index % 5) / 5
    out.mkdir(parents=True, exist_ok=True)
    frame.iloc[:rows].to_csv(out / "train.csv", index=False)
    frame.iloc[rows:].to_csv(out / "validation.csv", index=False)
    return out


def evaluated_run(spec: RunSpec, model_dir: Path, runs_dir: Path, data_dir: Path) -> tuple[EvalResult, SnapshotResult]:
    """Snapshot the spec's rows and evaluate `model_dir` on them as run `spec.id`."""
    snapshot = core_snapshot(spec, runs_dir, data_dir)
    result = evaluate(
        run_id=spec.id, model_dir=model_dir, snapshot=snapshot, request=spec.primary_eval, runs_dir=runs_dir
    )
    return result, snapshot
