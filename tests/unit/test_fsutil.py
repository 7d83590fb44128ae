"""publish_dir: a directory appears complete or not at all; failures leave no staging behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bert_eval.core.storage import fsutil
from bert_eval.core.storage.fsutil import publish_dir


def _staged(parent: Path, name: str, content: str) -> Path:
    staging = parent / f".staging-{name}"
    (staging / "sub").mkdir(parents=True)
    (staging / "sub" / "weights.bin").write_text(content)
    return staging


def test_publishes_and_fsyncs_the_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    real = fsutil.fsync_dir
    monkeypatch.setattr(fsutil, "fsync_dir", lambda path: (synced.append(Path(path)), real(path)))
    assert publish_dir(_staged(tmp_path, "a", "one"), tmp_path / "model") is True
    assert (tmp_path / "model" / "sub" / "weights.bin").read_text() == "one"
    assert synced[-1] == tmp_path  # the rename itself is made durable
    assert not list(tmp_path.glob(".staging-*"))


def test_an_existing_target_is_kept_unless_replacing(tmp_path: Path) -> None:
    publish_dir(_staged(tmp_path, "a", "one"), tmp_path / "model")
    assert publish_dir(_staged(tmp_path, "b", "two"), tmp_path / "model") is False
    assert (tmp_path / "model" / "sub" / "weights.bin").read_text() == "one"
    assert publish_dir(_staged(tmp_path, "c", "three"), tmp_path / "model", replace=True) is True
    assert (tmp_path / "model" / "sub" / "weights.bin").read_text() == "three"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging, no replaced copy left


def test_a_failed_publish_removes_staging_and_leaves_the_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish_dir(_staged(tmp_path, "a", "one"), tmp_path / "model")

    def full_disk(path: str | os.PathLike, *args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(fsutil.os, "rename", full_disk)
    with pytest.raises(OSError, match="No space left"):
        publish_dir(_staged(tmp_path, "b", "two"), tmp_path / "model", replace=True)
    monkeypatch.undo()
    assert (tmp_path / "model" / "sub" / "weights.bin").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
