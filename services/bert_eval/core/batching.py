"""Batches with little padding: a seeded length-grouped sampler and the per-batch padding collator."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import get_length_grouped_indices

__all__ = ["PAD_MULTIPLE", "SeededLengthGroupedSampler", "padding_collator"]

# Tensor cores (and CPU vector units) work on multiples of 8; the extra padding is at most 7 tokens.
PAD_MULTIPLE = 8


class SeededLengthGroupedSampler(Sampler[int]):
    """Random mega-batches sorted by length, so each batch holds rows of similar length.

    The order is a pure function of (seed, epoch): the Trainer calls `set_epoch` before each epoch, so a
    run resumed mid-epoch sees exactly the batches an uninterrupted run sees (the Trainer's own
    length-grouped sampler draws from the global RNG, which a resume restores to a later point).
    """

    def __init__(self, lengths: Sequence[int], *, batch_size: int, seed: int) -> None:
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


def padding_collator(tokenizer: PreTrainedTokenizerBase, *, dynamic: bool, max_length: int) -> DataCollatorWithPadding:
    """Dynamic: pad each batch to its longest row, rounded up to a multiple of 8. Else pad every row to max_length."""
    if dynamic:
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=PAD_MULTIPLE)
    return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=max_length)
