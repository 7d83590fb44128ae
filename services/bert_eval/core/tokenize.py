"""Tokenization shared by training and evaluation (no padding here: the collator pads per batch)."""

from __future__ import annotations

import datasets
from transformers import PreTrainedTokenizerBase

from bert_eval.core.snapshot import LABEL, TEXT, TEXT_PAIR

__all__ = ["tokenize_split"]


def tokenize_split(split: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, *, max_length: int) -> datasets.Dataset:
    has_pair = TEXT_PAIR in split.column_names

    def encode(batch: dict) -> dict:
        pair = batch[TEXT_PAIR] if has_pair else None
        encoded = tokenizer(batch[TEXT], pair, truncation=True, max_length=max_length)
        encoded["labels"] = batch[LABEL]
        return encoded

    return split.map(encode, batched=True, remove_columns=split.column_names, keep_in_memory=True)
