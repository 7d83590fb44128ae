"""Predictions from a trained run's final model: label names from the run's own class set, with
confidences."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.modeling import load_trained
from bert_eval.core.records import PredictResult
from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.storage.rundir import trained_summary
from bert_eval.spec import TaskType

__all__ = ["PAIR_SEPARATOR", "predict"]

# A sentence-pair run takes each text as "first<TAB>second" (one line of a --file).
PAIR_SEPARATOR = "\t"


def predict(
    *,
    run_id: str,
    texts: Sequence[str],
    runs_dir: Path,
    device: str = "cpu",
    batch_size: int = 64,
    max_seq_length: int | None = None,
) -> PredictResult:
    """Classify (or score) `texts` with the run's final model, truncating as training did unless told otherwise.

    Parameters
    ----------
    run_id : str
        A run whose training finished (its `model/` and summary are in place).
    texts : sequence of str
        The texts; for a sentence-pair run each is ``"first<TAB>second"`` (`PAIR_SEPARATOR`).
    runs_dir : Path
        The runs volume holding the run.
    device : str, default "cpu"
        Where to run the model.
    batch_size : int, default 64
        Texts per forward pass.
    max_seq_length : int, optional
        Truncate to this many tokens instead of the training length (never beyond the model's limit).

    Returns
    -------
    PredictResult
        For classification, the label name, label id and confidence (softmax probability) of each text; for
        regression, each text's score (also as text in `predicted_labels`).

    Raises
    ------
    InvalidInputError
        If `texts` is empty, the run does not exist or has not finished training, or a pair run gets a text
        without a tab.
    """
    if not texts:
        raise InvalidInputError(f"run {run_id}: no texts to predict")
    layout = RunLayout(runs_dir, run_id)
    schema = trained_summary(layout).dataset_schema
    tokenizer, model = load_trained(layout.model_dir, schema, run_id=run_id, device=device)
    # The saved tokenizer records the training max_seq_length (see training.fine_tune).
    max_length = min(max_seq_length or tokenizer.model_max_length, model.config.max_position_embeddings)
    first, second = _split_pairs(run_id, list(texts), pair=len(schema.text_columns) == 2)

    outputs = []
    with torch.inference_mode():
        for start in range(0, len(first), batch_size):
            batch = tokenizer(
                first[start : start + batch_size],
                second[start : start + batch_size] if second is not None else None,
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            outputs.append(model(**batch).logits.float().cpu())
    logits = torch.cat(outputs)

    if schema.task is TaskType.regression:
        scores = logits.squeeze(-1).tolist()
        return PredictResult(
            run_id=run_id,
            texts=list(texts),
            predicted_labels=[f"{score:.6g}" for score in scores],
            predicted_label_ids=[],
            confidences=[],
            scores=scores,
        )
    probabilities = torch.softmax(logits, dim=-1)
    confidence, label_ids = probabilities.max(dim=-1)
    return PredictResult(
        run_id=run_id,
        texts=list(texts),
        predicted_labels=[schema.label_names[i] for i in label_ids.tolist()],
        predicted_label_ids=label_ids.tolist(),
        confidences=[round(c, 6) for c in confidence.tolist()],
    )


def _split_pairs(run_id: str, texts: list[str], *, pair: bool) -> tuple[list[str], list[str] | None]:
    if not pair:
        return texts, None
    malformed = [i for i, text in enumerate(texts) if PAIR_SEPARATOR not in text]
    if malformed:
        raise InvalidInputError(
            f"run {run_id} was trained on sentence pairs: give each text as 'first<TAB>second' "
            f"(text {malformed[0] + 1} has no tab)"
        )
    halves = [text.split(PAIR_SEPARATOR, 1) for text in texts]
    return [h[0] for h in halves], [h[1] for h in halves]
