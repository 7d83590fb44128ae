from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bert_eval.core.storage.checkpoints import CHECKPOINT_MANIFEST, CheckpointStore


def _save(store: CheckpointStore, step: int, payload: str = "weights") -> Path:
    staging = store.new_staging_dir()
    (staging / "model.bin").write_text(payload)
    return store.publish(staging, step=step, manifest={"fingerprint": "f"}).path


def test_newest_is_chosen_by_step_number_not_text(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=10)
    for step in (500, 1000, 50):
        _save(store, step)
    assert [c.step for c in store.complete()] == [50, 500, 1000]
    assert store.latest_complete().step == 1000


def test_half_written_checkpoints_are_ignored(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=10)
    _save(store, 100)
    # A crash mid-save by some other writer: a checkpoint-looking directory without the manifest...
    (tmp_path / "checkpoint-300").mkdir()
    (tmp_path / "checkpoint-300" / "model.bin").write_text("torn")
    # ...and our own staging directory that never got renamed.
    staging = store.new_staging_dir()
    (staging / "model.bin").write_text("partial")
    assert store.latest_complete().step == 100
    assert store.latest_complete().manifest()["fingerprint"] == "f"


def test_publishing_an_existing_step_never_overwrites_it(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=10)
    path = _save(store, 10, "first")
    assert _save(store, 10, "second") == path
    assert (path / "model.bin").read_text() == "first"
    assert not list(tmp_path.glob(".staging-*"))


def test_prune_keeps_the_newest_and_removes_stale_staging(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for step in (10, 20, 30):
        _save(store, step)
    stale = store.new_staging_dir()
    old = time.time() - 7200
    os.utime(stale, (old, old))
    fresh = store.new_staging_dir()
    store.prune()
    assert [c.step for c in store.complete()] == [20, 30]
    assert not stale.exists() and fresh.exists()


def test_manifest_is_written_last_inside_the_published_directory(tmp_path: Path) -> None:
    path = _save(CheckpointStore(tmp_path), 7)
    assert (path / CHECKPOINT_MANIFEST).is_file() and path.name == "checkpoint-7"


def test_a_prune_killed_mid_delete_leaves_nothing_that_looks_like_a_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker SIGKILLed while pruning must not leave a `checkpoint-N` with its manifest and files partly
    gone: the directory leaves the checkpoint names in one rename before its files go, and the next prune
    removes the rest (also debris from older releases' in-place delete)."""
    import shutil

    store = CheckpointStore(tmp_path, keep=2)
    for step in (10, 20, 30):
        _save(store, step)
    # What the old in-place delete could leave: an older checkpoint directory without its manifest.
    debris = tmp_path / "checkpoint-5"
    debris.mkdir()
    (debris / "model.bin").write_text("half deleted")

    def killed(path, *args, **kwargs):
        raise SystemExit("SIGKILL")  # the process dies inside the delete

    with monkeypatch.context() as patched:
        patched.setattr(shutil, "rmtree", killed)
        try:
            store.prune()
        except SystemExit:
            pass
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30", "checkpoint-5"]
    [trash] = tmp_path.glob(".trash-*")
    assert trash.name.startswith(".trash-checkpoint-10-")
    assert store.latest_complete().step == 30

    store.prune()  # the next attempt's prune
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-20", "checkpoint-30"]
    assert [c.step for c in store.complete()] == [20, 30]
