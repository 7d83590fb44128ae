"""Tokenization shared by training and evaluation, done once per snapshot and cached beside it.

No padding here: the collator pads each batch. Every row also gets its token count (`length`), which
length-grouped batching and length-sorted evaluation read without touching the token ids.

The cache lives in `<snapshot>/tokenized/<key>/`, keyed by the snapshot digest, the tokenizer's content
and max_seq_length, so a retried attempt or a second run on the same rows skips tokenization. It is
put into place with `publish_dir` (staging, fsync, rename), so a reader never sees half of it; the
snapshot's own verification only covers the files its manifest lists, so the cache never disturbs it.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from bert_eval import telemetry
from bert_eval.core.data.snapshot import LABEL, TEXT, TEXT_PAIR, read_split
from bert_eval.core.records import SnapshotResult
from bert_eval.core.storage.fsutil import discard_dir, publish_dir

__all__ = ["LENGTH", "BackendDigests", "tokenization_key", "tokenize_split", "tokenized_split"]

LENGTH = "length"
_CACHE_DIR = "tokenized"
# Bumped when the cached columns change, so an old cache is never read as a new one.
_FORMAT = 1

log = telemetry.get_logger(__name__)


def tokenize_split(split: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, *, max_length: int) -> datasets.Dataset:
    """Tokenize a normalized table (text, optional text pair, label) without padding, truncating to
    `max_length`; the result holds the token columns, `labels` and each row's token count (`length`)."""
    has_pair = TEXT_PAIR in split.column_names

    def encode(batch: dict) -> dict:
        pair = batch[TEXT_PAIR] if has_pair else None
        encoded = tokenizer(batch[TEXT], pair, truncation=True, max_length=max_length)
        encoded["labels"] = batch[LABEL]
        encoded[LENGTH] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    # In memory, so datasets' own cache is never used: a fresh fingerprint spares it hashing `encode`
    # (the tokenizer with it) through dill, which costs more than tokenizing a small run.
    return split.map(
        encode, batched=True, remove_columns=split.column_names, keep_in_memory=True, new_fingerprint=uuid.uuid4().hex
    )


def tokenization_key(
    snapshot: SnapshotResult, split: str, tokenizer: PreTrainedTokenizerBase, *, max_length: int
) -> str:
    """Digest of everything that determines a tokenized split: rows, tokenizer content, truncation."""
    identity = f"{_FORMAT}\0{snapshot.snapshot_id}\0{split}\0{max_length}\0{type(tokenizer).__name__}"
    digest = hashlib.sha256(identity.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(_BACKEND_DIGESTS.digest(backend.to_str()).encode())
    else:
        digest.update(repr(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(repr(tokenizer.special_tokens_map).encode())
    return digest.hexdigest()[:16]


class BackendDigests:
    """The content digest of a serialized fast tokenizer, remembered by the sha256 of the serialization.

    The digest covers the vocabulary, normalizer, pre-tokenizer and post-processor, not the truncation and
    padding state the last call left behind (it changes with each call's arguments, not with the
    tokenizer); computing it means parsing and re-sorting the whole vocabulary, so a worker remembers it
    for the last `capacity` serializations it saw. A changed tokenizer serializes differently: a miss.
    """

    def __init__(self, capacity: int = 16) -> None:
        self.capacity = capacity
        self.hits = 0
        self._digests: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()  # evaluations run on several threads of one worker

    def __len__(self) -> int:
        return len(self._digests)

    def digest(self, serialized: str) -> str:
        """The digest of the tokenizer serialized as `serialized` (`backend_tokenizer.to_str()`)."""
        key = hashlib.sha256(serialized.encode()).hexdigest()
        with self._lock:
            if (found := self._digests.get(key)) is not None:
                self._digests.move_to_end(key)
                self.hits += 1
                return found
        content = json.loads(serialized)
        content.pop("truncation", None)
        content.pop("padding", None)
        found = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        with self._lock:
            self._digests[key] = found
            if len(self._digests) > self.capacity:
                self._digests.popitem(last=False)
        return found


_BACKEND_DIGESTS = BackendDigests()


def tokenized_split(
    snapshot: SnapshotResult,
    table: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    cache: bool = True,
    run_id: str | None = None,
) -> datasets.Dataset:
    """A snapshot table, tokenized; read from the cache beside the snapshot when it is there.

    The table's rows are read (digest-verified against the snapshot manifest) even on a cache hit: the
    cache is keyed by the snapshot id, so a table edited after the snapshot was taken must still fail
    the run instead of being served from a cache built on the original bytes.
    """
    rows = read_split(snapshot, table, run_id=run_id)
    if not cache:
        return tokenize_split(rows, tokenizer, max_length=max_length)
    key = tokenization_key(snapshot, table, tokenizer, max_length=max_length)
    root = Path(snapshot.path) / _CACHE_DIR
    target = root / f"{table}-{key}"
    if target.is_dir():
        try:
            return datasets.load_from_disk(str(target), keep_in_memory=True)
        except (OSError, ValueError) as exc:
            log.warning("tokenization cache unreadable; tokenizing again", path=str(target), error=str(exc))
    encoded = tokenize_split(rows, tokenizer, max_length=max_length)
    try:
        _publish(encoded, root, target)
    except OSError as exc:  # a read-only or full volume costs speed, not the run
        log.warning("could not cache tokenized split", path=str(target), error=str(exc))
    return encoded


def _publish(encoded: datasets.Dataset, root: Path, target: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".tmp-{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        encoded.save_to_disk(str(staging))
    except BaseException:
        discard_dir(staging)
        raise
    if not publish_dir(staging, target):
        # Another worker published the same key first: same rows, same tokenizer, so theirs is as good.
        log.debug("tokenized split was cached concurrently; keeping the existing copy", path=str(target))
