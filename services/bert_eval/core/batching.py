"""Batches with little padding: a seeded length-grouped sampler and the per-batch padding collator."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import get_length_grouped_indices

__all__ = [
    "BATCHING_KEY", "LEGACY_SCHEME", "PAD_MULTIPLE", "BatchingScheme", "SeededLengthGroupedSampler", "padding_collator", "scheme_collator",
]

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


# The checkpoint-manifest key that records how a run's batches were formed.
BATCHING_KEY = "batching"
_PADDINGS = ("longest", "multiple-of-8", "max_length")


@dataclass(frozen=True)
class BatchingScheme:
    """How batches are formed: the data order (length-grouped or the Trainer's random sampler) and padding.

    Recorded in every checkpoint's manifest, and read back on resume, so a run keeps the scheme it
    started with even when the defaults change between releases: the rest of the run sees the same
    sequence of batches it would have seen uninterrupted.
    """

    group_by_length: bool
    padding: str  # "longest" (previous release), "multiple-of-8" (dynamic), "max_length"

    def __post_init__(self) -> None:
        if self.padding not in _PADDINGS:
            raise ValueError(f"unknown padding {self.padding!r} (one of {_PADDINGS})")

    @classmethod
    def for_new_run(cls, *, group_by_length: bool, dynamic_padding: bool) -> BatchingScheme:
        return cls(group_by_length=group_by_length, padding="multiple-of-8" if dynamic_padding else "max_length")

    @classmethod
    def of_checkpoint(cls, manifest: Mapping[str, Any]) -> BatchingScheme:
        """The scheme a checkpoint was written with; one without the marker predates it (LEGACY_SCHEME)."""
        recorded = manifest.get(BATCHING_KEY)
        if recorded is None:
            return LEGACY_SCHEME
        return cls(group_by_length=bool(recorded["group_by_length"]), padding=str(recorded["padding"]))

    def to_manifest(self) -> dict[str, Any]:
        return {"group_by_length": self.group_by_length, "padding": self.padding}


# The release before length-grouped batches: the Trainer's random sampler, each batch padded to its longest row.
LEGACY_SCHEME = BatchingScheme(group_by_length=False, padding="longest")


def scheme_collator(scheme: BatchingScheme, tokenizer: PreTrainedTokenizerBase, *, max_length: int) -> DataCollatorWithPadding:
    if scheme.padding == "longest":
        return DataCollatorWithPadding(tokenizer)
    return padding_collator(tokenizer, dynamic=scheme.padding == "multiple-of-8", max_length=max_length)


def padding_collator(tokenizer: PreTrainedTokenizerBase, *, dynamic: bool, max_length: int) -> DataCollatorWithPadding:
    """Dynamic: pad each batch to its longest row, rounded up to a multiple of 8. Else pad every row to max_length."""
    if dynamic:
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=PAD_MULTIPLE)
    return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=max_length)
