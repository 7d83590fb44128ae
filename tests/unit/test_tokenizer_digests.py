"""The worker's memory of tokenizer content digests (the tokenization cache's key): a hit for the same
content, a miss for changed content, and a bounded size."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.core import core_snapshot
from support.specs import core_spec
from transformers import AutoTokenizer

from bert_eval.core.data import tokenize
from bert_eval.core.data.tokenize import BackendDigests, tokenization_key


def test_a_reloaded_tokenizer_hits_and_a_changed_one_misses(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digests = BackendDigests()
    monkeypatch.setattr(tokenize, "_BACKEND_DIGESTS", digests)
    snapshot = core_snapshot(core_spec(tiny_model_dir, "digests"), tmp_path / "runs", data_dir)
    first = tokenization_key(snapshot, "train", AutoTokenizer.from_pretrained(str(tiny_model_dir)), max_length=32)
    reloaded = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert tokenization_key(snapshot, "train", reloaded, max_length=32) == first
    assert (digests.hits, len(digests)) == (1, 1)
    # The truncation state a call leaves behind serializes differently but is not part of the content.
    reloaded("a call that leaves truncation state behind", truncation=True, max_length=7)
    assert tokenization_key(snapshot, "train", reloaded, max_length=32) == first

    changed = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    changed.add_tokens(["zzyzx"])
    assert tokenization_key(snapshot, "train", changed, max_length=32) != first
    assert (digests.hits, len(digests)) == (1, 3)


def test_the_memory_keeps_only_the_most_recent_serializations() -> None:
    digests = BackendDigests(capacity=2)
    tokenizers = [f'{{"version": "1.0", "model": {{"vocab": {{"t{i}": 0}}}}}}' for i in range(3)]
    values = [digests.digest(t) for t in tokenizers]
    assert len(set(values)) == 3 and len(digests) == 2
    assert digests.digest(tokenizers[2]) == values[2] and digests.hits == 1  # the newest is remembered
    assert digests.digest(tokenizers[0]) == values[0] and digests.hits == 1  # the oldest was dropped: computed again
    assert len(digests) == 2
