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
    "BATCHING_KEY",
    "LEGACY_SCHEME",
    "PAD_MULTIPLE",
    "BatchingScheme",
    "SeededLengthGroupedSampler",
    "dynamic_padding",
    "padding_collator",
]

# Tensor cores work on multiples of 8; the extra padding is at most 7 tokens.
PAD_MULTIPLE = 8


def dynamic_padding(device: str, *, enabled: bool = True) -> str:
    """How a batch is padded to its longest row on a device: rounded up to a multiple of 8 on CUDA
    (tensor-core shapes), not rounded on CPU, where the sequence length only sets how many rows a GEMM has
    and the rounding is extra work (docs/performance.md). Not `enabled` (the run turned dynamic padding
    off): every row padded to max_length."""
    if not enabled:
        return "max_length"
    return "multiple-of-8" if device.startswith("cuda") else "longest"


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
        """Order the next iteration for `epoch` (the Trainer calls this before each epoch)."""
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
    # "longest" (CPU; and the release before length grouping), "multiple-of-8" (CUDA), "max_length" (off).
    padding: str

    def __post_init__(self) -> None:
        if self.padding not in _PADDINGS:
            raise ValueError(f"unknown padding {self.padding!r} (one of {_PADDINGS})")

    @classmethod
    def for_new_run(cls, *, group_by_length: bool, padding: str) -> BatchingScheme:
        """The scheme a run starting now uses (`padding` as `dynamic_padding` returns it)."""
        return cls(group_by_length=group_by_length, padding=padding)

    @classmethod
    def of_checkpoint(cls, manifest: Mapping[str, Any]) -> BatchingScheme:
        """The scheme a checkpoint was written with; one without the marker predates it (LEGACY_SCHEME)."""
        recorded = manifest.get(BATCHING_KEY)
        if recorded is None:
            return LEGACY_SCHEME
        return cls(group_by_length=bool(recorded["group_by_length"]), padding=str(recorded["padding"]))

    def to_manifest(self) -> dict[str, Any]:
        """The scheme as stored under `BATCHING_KEY` in a checkpoint's manifest (read by `of_checkpoint`)."""
        return {"group_by_length": self.group_by_length, "padding": self.padding}


# The release before length-grouped batches: the Trainer's random sampler, each batch padded to its longest row.
LEGACY_SCHEME = BatchingScheme(group_by_length=False, padding="longest")


def padding_collator(tokenizer: PreTrainedTokenizerBase, *, padding: str, max_length: int) -> DataCollatorWithPadding:
    """Pad each batch to its longest row ("longest"), rounded up to a multiple of 8 ("multiple-of-8"), or
    every row to max_length ("max_length")."""
    if padding == "longest":
        return DataCollatorWithPadding(tokenizer)
    if padding == "multiple-of-8":
        return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=PAD_MULTIPLE)
    if padding == "max_length":
        return DataCollatorWithPadding(tokenizer, padding="max_length", max_length=max_length)
    raise ValueError(f"unknown padding {padding!r} (one of {_PADDINGS})")
