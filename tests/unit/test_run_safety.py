"""Writes stay inside the runs directory and belong to the current attempt; deterministic failures are
caught before training; a checkpoint that cannot be written leaves the previous one intact."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import time
from pathlib import Path

import pytest
from support.core import core_snapshot
from support.specs import core_spec

from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation.batched import evaluate
from bert_eval.core.storage import fsutil
from bert_eval.core.storage.checkpoints import CheckpointStore
from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.storage.rundir import AttemptFence, StaleAttemptError, run_dir_conflict
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.spec import RunSpec


def _spec(model_dir: Path, run_id: str = "safe-run", **train: object) -> RunSpec:
    return core_spec(model_dir, run_id, **train)


_snapshot = core_snapshot


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_symlinked_run_directory_is_refused_and_nothing_lands_outside(
    tmp_path: Path, runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _spec(tiny_model_dir)
    snapshot = _snapshot(spec, runs_dir, data_dir)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (runs_dir / "runs").mkdir()
    (runs_dir / "runs" / spec.id).symlink_to(outside)
    layout = RunLayout(runs_dir, spec.id)
    assert "is a symbolic link" in (run_dir_conflict(layout, spec) or "")  # what the CLI checks before submitting
    started = time.monotonic()
    with pytest.raises(InvalidInputError, match=rf"run {spec.id}: .*{spec.id} is a symbolic link .*refusing"):
        fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    assert time.monotonic() - started < 5
    with pytest.raises(InvalidInputError, match="is a symbolic link"):
        evaluate(
            run_id=spec.id, model_dir=tiny_model_dir, snapshot=snapshot, request=spec.primary_eval, runs_dir=runs_dir
        )
    assert list(outside.iterdir()) == []


def test_a_symlinked_file_inside_the_run_directory_is_refused(
    tmp_path: Path, runs_dir: Path, tiny_model_dir: Path
) -> None:
    spec = _spec(tiny_model_dir)
    layout = RunLayout(runs_dir, spec.id)
    layout.root.mkdir(parents=True)
    target = tmp_path / "victim.json"
    target.write_text("precious")
    layout.summary_file.symlink_to(target)
    with pytest.raises(InvalidInputError, match="training-summary.json is a symbolic link"):
        layout.ensure_safe()
    assert target.read_text() == "precious"


def test_a_corrupt_spec_json_is_a_clear_error_and_stays_untouched(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _spec(tiny_model_dir)
    snapshot = _snapshot(spec, runs_dir, data_dir)
    layout = RunLayout(runs_dir, spec.id)
    layout.root.mkdir(parents=True)
    layout.spec_file.write_text('{"fingerprint": "abc", "spec": {')
    before = _files(layout.root)
    assert "cannot be read" in (run_dir_conflict(layout, spec) or "")
    with pytest.raises(
        InvalidInputError, match=rf"run {spec.id}: its record .*spec.json cannot be read .*left untouched"
    ):
        fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    assert _files(layout.root) == before


def test_sequence_length_above_the_model_positions_fails_before_training(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _spec(tiny_model_dir, max_seq_length=256)  # the tiny model has 128 positions
    snapshot = _snapshot(spec, runs_dir, data_dir)
    started = time.monotonic()
    with pytest.raises(
        InvalidInputError,
        match=r"run safe-run: train.max_seq_length 256 exceeds .*max_position_embeddings 128.*128 or less",
    ):
        fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    assert time.monotonic() - started < 5
    assert CheckpointStore(RunLayout(runs_dir, spec.id).checkpoints).latest_complete() is None


def _fake_checkpoints(store: CheckpointStore, steps: list[int]) -> None:
    for step in steps:
        staging = store.new_staging_dir()
        (staging / "weights.bin").write_text(str(step))
        store.publish(staging, step=step, manifest={"fingerprint": "f"})


def test_a_superseded_attempt_can_neither_publish_nor_prune(runs_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    layout = RunLayout(runs_dir, "fenced")
    old, new = AttemptFence(layout, attempt=1, scheduled_at=100.0), AttemptFence(layout, attempt=2, scheduled_at=200.0)
    old.claim()
    old_store = CheckpointStore(layout.checkpoints, keep=1, guard=old.publishing)
    _fake_checkpoints(old_store, [5])
    new.claim()
    new_store = CheckpointStore(layout.checkpoints, keep=3, guard=new.publishing)
    _fake_checkpoints(new_store, [10, 15])
    with (
        caplog.at_level(logging.WARNING),
        pytest.raises(StaleAttemptError, match=r"run fenced: attempt 1 may not publish checkpoint-20: attempt 2"),
    ):
        _fake_checkpoints(old_store, [20])
    with pytest.raises(StaleAttemptError, match="attempt 1 may not prune checkpoints"):
        old_store.prune()
    assert [c.step for c in new_store.complete()] == [5, 10, 15]
    assert not list(layout.checkpoints.glob(".staging-*"))
    assert "attempt 1 may not publish checkpoint-20" in caplog.text
    # An attempt scheduled before the current one cannot take the run back by claiming late.
    with pytest.raises(StaleAttemptError, match="attempt 1 may not start"):
        AttemptFence(layout, attempt=1, scheduled_at=150.0).claim()
    assert new.is_current() and not old.is_current()


def test_a_stale_attempt_beside_a_newer_one_writes_nothing(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _spec(tiny_model_dir)  # 12 steps, checkpoints at 5 and 10
    snapshot = _snapshot(spec, runs_dir, data_dir)
    layout = RunLayout(runs_dir, spec.id)
    usurped: list[AttemptFence] = []

    def newer_attempt_starts(progress) -> None:
        # Once checkpoint-5 is published, the run is handed to attempt 2. Checkpoints are written in the
        # background, so the published checkpoint (not the step count) says when that is.
        published = progress.last_checkpoint.step if progress.last_checkpoint else 0
        if published >= 5 and not usurped:
            usurped.append(AttemptFence(layout, attempt=2))
            usurped[0].claim()

    with pytest.raises(StaleAttemptError, match=r"attempt 1 may not publish checkpoint-10"):
        fine_tune(
            FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, attempt=1), on_progress=newer_attempt_starts
        )
    assert [c.step for c in CheckpointStore(layout.checkpoints).complete()] == [5]
    assert not layout.model_dir.exists() and not layout.summary_file.exists()
    assert not list(layout.checkpoints.glob(".staging-*"))
    summary = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, attempt=2))
    assert (summary.steps, summary.resumed_from_steps) == (12, (5,))


def _fail_second_flush(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """The filesystem boundary: the 2nd checkpoint's directory flush fails with `code` (other directories
    published on the way, such as the tokenization cache, flush as usual)."""
    real, calls = fsutil.fsync_tree, []

    def flush(root: Path) -> None:
        if "checkpoints" in Path(root).parts:
            calls.append(root)
        if len(calls) == 2 and calls[-1] == root:
            raise OSError(code, os.strerror(code), str(root))
        real(root)

    monkeypatch.setattr(fsutil, "fsync_tree", flush)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one_intact(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    spec = _spec(tiny_model_dir)
    snapshot = _snapshot(spec, runs_dir, data_dir)
    _fail_second_flush(monkeypatch, code)
    with pytest.raises(
        OSError,
        match=rf"run safe-run: cannot write the checkpoint of step 10 .*{os.strerror(code)}; "
        r"the previous checkpoint \(step 5\) is intact and no partial checkpoint was left",
    ) as failure:
        fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    assert failure.value.errno == code
    monkeypatch.undo()
    checkpoints = RunLayout(runs_dir, spec.id).checkpoints
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-5"]
    # Once the volume is fixed, the run resumes from that checkpoint.
    summary = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, attempt=2))
    assert summary.resumed_from_steps == (5,)


@pytest.fixture
def small_volume(tmp_path: Path):
    """A real 20 MiB tmpfs (room for one tiny-model checkpoint, not two); skipped where mounting is not allowed."""
    mount = tmp_path / "volume"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the injected-error test covers this path")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_really_full_volume_during_a_checkpoint(
    small_volume: Path, tmp_path: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _spec(tiny_model_dir, keep_checkpoints=3)
    runs_dir = small_volume / "bert_runs"
    snapshot = _snapshot(spec, runs_dir, data_dir)
    expected = (
        r"run safe-run: cannot write the checkpoint of step 10 .*No space left on device; "
        r"the previous checkpoint \(step 5\) is intact"
    )
    with pytest.raises(OSError, match=expected) as failure:
        fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    assert failure.value.errno == errno.ENOSPC
    checkpoints = RunLayout(runs_dir, spec.id).checkpoints
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-5"]
    manifest = json.loads((checkpoints / "checkpoint-5" / "bert-eval-checkpoint.json").read_text())
    assert manifest["step"] == 5


def test_an_experiment_record_is_never_written_through_a_link(tmp_path: Path, runs_dir: Path) -> None:
    from bert_eval.core.storage.layout import experiment_file

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (runs_dir / "experiments").symlink_to(elsewhere)
    with pytest.raises(InvalidInputError, match="experiment exp-1: .*experiments is a symbolic link"):
        experiment_file(runs_dir, "exp-1")
