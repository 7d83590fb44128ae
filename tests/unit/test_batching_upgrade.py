"""Upgrade safety: a checkpoint of the release before length-grouped batches resumes with that release's
data order and padding; new checkpoints record the batching they used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file
from support.specs import core_spec

from bert_eval.core.data.batching import BATCHING_KEY, LEGACY_SCHEME, BatchingScheme
from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot
from bert_eval.core.errors import TrainingInterrupted
from bert_eval.core.storage.checkpoints import CHECKPOINT_MANIFEST, CheckpointStore
from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.training import finetuning as training
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.spec import RunSpec


def _spec(model_dir: Path) -> RunSpec:
    return core_spec(model_dir, "upgrade-run", epochs=2)


def _train(spec: RunSpec, runs_dir: Path, data_dir: Path, *, attempt: int = 1, **callbacks: object):
    snapshot = create_snapshot(SnapshotInput.for_run(spec), runs_dir=runs_dir, data_dir=data_dir)
    return fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir, attempt=attempt), **callbacks)


def test_the_scheme_marker_round_trips_and_its_absence_means_the_previous_release() -> None:
    new = BatchingScheme.for_new_run(group_by_length=True, padding="multiple-of-8")
    assert BatchingScheme.of_checkpoint({BATCHING_KEY: new.to_manifest()}) == new
    assert BatchingScheme.of_checkpoint({"fingerprint": "f", "model": "m"}) == LEGACY_SCHEME
    assert LEGACY_SCHEME == BatchingScheme(group_by_length=False, padding="longest")


def test_a_checkpoint_of_the_previous_release_resumes_with_its_data_order(
    tmp_path: Path, tiny_model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _spec(tiny_model_dir)
    # The previous release, uninterrupted: the Trainer's random sampler, batches padded to their longest row.
    with monkeypatch.context() as previous_release:
        previous_release.setattr(training.BatchingScheme, "for_new_run", classmethod(lambda cls, **_: LEGACY_SCHEME))
        straight = _train(spec, tmp_path / "straight", data_dir)
        # The same run, stopped at step 7 by the upgrade; its checkpoint carries no batching marker.
        seen: list[int] = []
        with pytest.raises(TrainingInterrupted):
            _train(
                spec,
                tmp_path / "upgraded",
                data_dir,
                on_progress=lambda p: seen.append(p.step),
                should_stop=lambda: bool(seen) and seen[-1] >= 7,
            )
    checkpoints = CheckpointStore(RunLayout(tmp_path / "upgraded", spec.id).checkpoints)
    for checkpoint in checkpoints.complete():
        manifest = checkpoint.manifest()
        manifest.pop(BATCHING_KEY)
        (checkpoint.path / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest))
    assert checkpoints.latest_complete().step == 7

    # Resumed by the new release, whose defaults (length-grouped batches) differ.
    resumed = _train(spec, tmp_path / "upgraded", data_dir, attempt=2)

    assert (resumed.steps, resumed.resumed_from_steps) == (straight.steps, (7,))
    assert resumed.final_loss == straight.final_loss
    a = load_file(str(Path(straight.model_dir) / "model.safetensors"))
    b = load_file(str(Path(resumed.model_dir) / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
    # Checkpoints written after the resume record the scheme they continued with.
    newest = checkpoints.latest_complete()
    assert newest.step > 7 and newest.manifest()[BATCHING_KEY] == LEGACY_SCHEME.to_manifest()


def test_a_new_run_records_its_batching_scheme(runs_dir: Path, tiny_model_dir: Path, data_dir: Path) -> None:
    spec = _spec(tiny_model_dir)
    _train(spec, runs_dir, data_dir)
    [*_, newest] = CheckpointStore(RunLayout(runs_dir, spec.id).checkpoints).complete()
    # On CPU, padded to the longest row (on CUDA, rounded up to a multiple of 8).
    assert newest.manifest()[BATCHING_KEY] == {"group_by_length": True, "padding": "longest"}
