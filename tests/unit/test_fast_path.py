"""The fast path's pieces: per-device arguments, length-grouped batches, tokenization cache,
background checkpoints, the observer, and evaluation that does not depend on its batching."""

from __future__ import annotations

import json
from pathlib import Path

import prometheus_client
import pytest
import torch
from support.core import core_snapshot
from support.specs import core_spec

from bert_eval.core.data.batching import SeededLengthGroupedSampler, dynamic_padding, padding_collator
from bert_eval.core.data.snapshot import read_split
from bert_eval.core.data.tokenize import LENGTH, tokenize_split, tokenized_split
from bert_eval.core.evaluation.batched import eval_batch_size, evaluate
from bert_eval.core.storage.checkpoints import CheckpointStore
from bert_eval.core.training.arguments import device_plan, scaled_learning_rate, training_arguments
from bert_eval.core.training.checkpoint_writer import BackgroundCheckpointWriter, HostState
from bert_eval.core.training.finetuning import FineTuneRequest, fine_tune
from bert_eval.core.training.observer import CheckpointEvent, LogWindow, TrainingObserver
from bert_eval.spec import EvalRequest, RunSpec, TrainHyperparameters


def _spec(model_dir: Path, run_id: str = "fast-run", **train: object) -> RunSpec:
    """160 rows (10 steps), no step checkpoints unless asked, 96 evaluation rows."""
    return core_spec(
        model_dir, run_id, eval_samples=96, **{"max_train_samples": 160, "checkpoint_every_steps": None, **train}
    )


_snapshot = core_snapshot


def test_fast_path_features_are_chosen_per_device_and_each_can_be_turned_off(tmp_path: Path) -> None:
    defaults = TrainHyperparameters()
    cpu = device_plan(defaults, "cpu", bf16_supported=True)
    cuda = device_plan(defaults, "cuda", bf16_supported=True)
    assert (cpu.bf16, cpu.fused_optimizer, cpu.dataloader_workers, cpu.pin_memory, cpu.padding) == (
        False,
        True,
        0,
        False,
        "longest",
    )
    assert (cuda.bf16, cuda.fused_optimizer, cuda.dataloader_workers, cuda.pin_memory, cuda.padding) == (
        True,
        True,
        2,
        True,
        "multiple-of-8",
    )
    assert not device_plan(defaults, "cuda", bf16_supported=False).bf16

    off = TrainHyperparameters(
        bf16=False,
        fused_optimizer=False,
        dataloader_workers=0,
        dynamic_padding=False,
        group_by_length=False,
        torch_compile=False,
    )
    plan = device_plan(off, "cuda", bf16_supported=True)
    assert (plan.bf16, plan.fused_optimizer, plan.dataloader_workers, plan.padding, plan.group_by_length) == (
        False,
        False,
        0,
        "max_length",
        False,
    )
    # (CUDA TrainingArguments cannot be built without a GPU; `make bench-gpu` runs that path.)
    args = training_arguments(defaults, cpu, output_dir=tmp_path)
    assert args.optim.value == "adamw_torch_fused" and not args.bf16 and args.use_cpu
    plain = training_arguments(off, device_plan(off, "cpu"), output_dir=tmp_path)
    assert plain.optim.value == "adamw_torch" and device_plan(off, "cpu").fused_optimizer is False
    # No per-step host reads from the Trainer itself; checkpoints come from the background writer.
    assert args.logging_nan_inf_filter is False
    assert args.save_strategy.value == "no" and args.logging_strategy.value == "no"
    assert scaled_learning_rate(32) == pytest.approx(5e-5) and scaled_learning_rate(256) == pytest.approx(5e-5 * 8**0.5)


def test_length_grouped_batches_depend_only_on_seed_and_epoch_and_pad_less() -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = (torch.randint(4, 60, (640,), generator=generator)).tolist()
    sampler = SeededLengthGroupedSampler(lengths, batch_size=16, seed=7)
    sampler.set_epoch(1)
    first = list(sampler)
    again = SeededLengthGroupedSampler(lengths, batch_size=16, seed=7)
    again.set_epoch(1)
    assert list(again) == first and sorted(first) == list(range(640))
    sampler.set_epoch(2)
    assert list(sampler) != first

    def padded_tokens(order: list[int]) -> int:
        return sum(16 * max(lengths[i] for i in order[k : k + 16]) for k in range(0, len(order), 16))

    shuffled = torch.randperm(640, generator=torch.Generator().manual_seed(1)).tolist()
    assert padded_tokens(first) < 0.8 * padded_tokens(shuffled)


def test_dynamic_padding_pads_to_the_longest_row_rounded_to_8_on_cuda_and_can_pad_to_max_length(
    tiny_model_dir: Path,
) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    rows = [tokenizer("a short one"), tokenizer("a slightly longer sentence than that one")]
    longest = max(len(row["input_ids"]) for row in rows)
    assert longest % 8 != 0  # so the rounding shows
    assert dynamic_padding("cpu") == "longest" and dynamic_padding("cuda:0") == "multiple-of-8"
    cpu = padding_collator(tokenizer, padding=dynamic_padding("cpu"), max_length=64)(rows)["input_ids"]
    cuda = padding_collator(tokenizer, padding=dynamic_padding("cuda"), max_length=64)(rows)["input_ids"]
    fixed = padding_collator(tokenizer, padding="max_length", max_length=64)(rows)["input_ids"]
    assert cpu.shape[1] == longest
    assert cuda.shape[1] % 8 == 0 and longest < cuda.shape[1] < 64
    assert fixed.shape[1] == 64
    with pytest.raises(ValueError, match="unknown padding"):
        padding_collator(tokenizer, padding="multiple-of-7", max_length=64)


def test_tokenization_is_cached_beside_the_snapshot_per_tokenizer_and_length(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    from transformers import AutoTokenizer

    spec = _spec(tiny_model_dir)
    snapshot = _snapshot(spec, runs_dir, data_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    first = tokenized_split(snapshot, "train", tokenizer, max_length=48)
    cached = sorted(p.name for p in (Path(snapshot.path) / "tokenized").iterdir())
    assert len(cached) == 1 and cached[0].startswith("train-")
    again = tokenized_split(snapshot, "train", tokenizer, max_length=48)
    assert again["input_ids"] == first["input_ids"] and again[LENGTH] == [len(ids) for ids in first["input_ids"]]
    shorter = tokenized_split(snapshot, "train", tokenizer, max_length=16)
    assert max(shorter[LENGTH]) <= 16 and len(list((Path(snapshot.path) / "tokenized").iterdir())) == 2
    # A damaged cache entry is re-tokenized, not trusted.
    for file in (Path(snapshot.path) / "tokenized" / cached[0]).iterdir():
        file.write_bytes(b"garbage")
    assert tokenized_split(snapshot, "train", tokenizer, max_length=48)["input_ids"] == first["input_ids"]


def test_a_split_cached_concurrently_by_another_worker_is_kept_and_no_staging_is_left(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers tokenize the same split at once. The one that publishes second keeps the first one's
    cache entry and returns its own rows, whether the other entry appeared before its rename or during it."""
    from transformers import AutoTokenizer

    from bert_eval.core.storage import fsutil

    snapshot = _snapshot(_spec(tiny_model_dir), runs_dir, data_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    cache = Path(snapshot.path) / "tokenized"
    real_fsync_tree, real_rename = fsutil.fsync_tree, fsutil.os.rename
    others: dict[int, int] = {}  # max_length -> inode of the other worker's entry

    def publish_other(max_length: int) -> None:
        with monkeypatch.context() as plain:
            plain.setattr(fsutil, "fsync_tree", real_fsync_tree)
            plain.setattr(fsutil.os, "rename", real_rename)
            tokenized_split(snapshot, "train", tokenizer, max_length=max_length)
        [entry] = [p for p in cache.glob("train-*") if p.stat().st_ino not in others.values()]
        others[max_length] = entry.stat().st_ino

    # Before: the other entry is in place by the time this worker has written its own copy.
    def other_publishes_first(path: Path) -> None:
        real_fsync_tree(path)
        if Path(path).name.startswith(".tmp-train-") and 48 not in others:
            publish_other(48)

    monkeypatch.setattr(fsutil, "fsync_tree", other_publishes_first)
    before = tokenized_split(snapshot, "train", tokenizer, max_length=48)
    monkeypatch.setattr(fsutil, "fsync_tree", real_fsync_tree)

    # During: the other entry lands between this worker's existence check and its rename.
    def other_renames_first(src: str | Path, dst: str | Path) -> None:
        if Path(dst).name.startswith("train-") and 16 not in others:
            publish_other(16)
        real_rename(src, dst)

    monkeypatch.setattr(fsutil.os, "rename", other_renames_first)
    during = tokenized_split(snapshot, "train", tokenizer, max_length=16)
    monkeypatch.undo()

    rows = read_split(snapshot, "train")
    assert before["input_ids"] == tokenize_split(rows, tokenizer, max_length=48)["input_ids"]
    assert during["input_ids"] == tokenize_split(rows, tokenizer, max_length=16)["input_ids"]
    entries = sorted(cache.iterdir())
    assert len(entries) == 2 and all(p.name.startswith("train-") for p in entries)  # no staging left
    assert sorted(p.stat().st_ino for p in entries) == sorted(others.values())  # the first published stay
    assert tokenized_split(snapshot, "train", tokenizer, max_length=16)["input_ids"] == during["input_ids"]


def _host_state(step: int) -> HostState:
    return HostState(
        step=step,
        weights={"w": torch.ones(3)},
        optimizer={"state": {}},
        scheduler={},
        rng={},
        trainer_state="{}",
        config="{}",
        copy_seconds=0.0,
    )


def test_background_writer_publishes_atomically_and_reports_write_errors_on_the_training_thread(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    saved = []
    writer = BackgroundCheckpointWriter(store, manifest={"fingerprint": "f"}, on_saved=saved.append)
    writer.save(_host_state(5))
    writer.flush()
    [checkpoint] = store.complete()
    assert checkpoint.step == 5 and checkpoint.manifest()["fingerprint"] == "f"
    assert (checkpoint.path / "model.safetensors").is_file() and saved[0].bytes > 0

    broken = BackgroundCheckpointWriter(store, manifest={"fingerprint": "f"}, on_saved=saved.append)
    bad = _host_state(9)
    object.__setattr__(bad, "weights", {"w": "not a tensor"})
    broken.save(bad)
    with pytest.raises(ValueError):  # safetensors refuses the non-tensor, on the writer's thread
        broken.flush()
    assert [c.step for c in store.complete()] == [5]  # nothing half-written was published
    assert not list(store.directory.glob(".staging-*"))


class _Recorder(TrainingObserver):
    def __init__(self) -> None:
        self.phases: list[str] = []
        self.windows: list[LogWindow] = []
        self.checkpoints: list[CheckpointEvent] = []

    def phase(self, phase: str) -> None:
        self.phases.append(phase)

    def logged(self, window: LogWindow) -> None:
        self.windows.append(window)

    def checkpoint_saved(self, event: CheckpointEvent) -> None:
        self.checkpoints.append(event)


def test_history_keeps_every_step_while_the_loss_is_read_once_per_logging_window(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _spec(tiny_model_dir, logging_steps=4, checkpoint_every_steps=6)
    recorder = _Recorder()
    summary = fine_tune(
        FineTuneRequest(run=spec, snapshot=_snapshot(spec, runs_dir, data_dir), runs_dir=runs_dir), observer=recorder
    )
    history = json.loads((runs_dir / "runs" / spec.id / "training-history.json").read_text())["log_history"]
    losses = [entry for entry in history if "loss" in entry]
    assert [entry["step"] for entry in losses] == list(range(1, summary.steps + 1))
    # Windows end at multiples of logging_steps, at checkpoints (6) and at the end (10).
    assert [w.step for w in recorder.windows] == [4, 6, 8, 10]
    assert summary.final_loss == pytest.approx(sum(e["loss"] for e in losses[-4:]) / 4, abs=1e-6)
    assert [c.step for c in recorder.checkpoints] == [6] and recorder.checkpoints[
        0
    ].blocked_seconds <= recorder.checkpoints[0].seconds
    assert recorder.phases == ["loading", "training", "saving", "completed"]
    # The core wrote no Prometheus series of its own: that is the activity layer's job.
    assert (
        prometheus_client.REGISTRY.get_sample_value("bert_eval_training_step", {"run_id": spec.id, "model": spec.model})
        is None
    )


def test_the_common_recipe_path_trains_the_same_number_of_steps(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _spec(
        tiny_model_dir,
        run_id="recipe",
        dynamic_padding=False,
        group_by_length=False,
        cache_tokenization=False,
        background_checkpoints=False,
        checkpoint_every_steps=5,
        logging_steps=1,
    )
    summary = fine_tune(FineTuneRequest(run=spec, snapshot=_snapshot(spec, runs_dir, data_dir), runs_dir=runs_dir))
    assert summary.steps == 10 and summary.checkpoints_saved == 2
    assert not (Path(_snapshot(spec, runs_dir, data_dir).path) / "tokenized").exists()


def test_evaluation_numbers_do_not_depend_on_sorting_batching_or_padding(
    runs_dir: Path, tiny_model_dir: Path, data_dir: Path
) -> None:
    spec = _spec(tiny_model_dir, run_id="eval-run")
    snapshot = _snapshot(spec, runs_dir, data_dir)
    summary = fine_tune(FineTuneRequest(run=spec, snapshot=snapshot, runs_dir=runs_dir))
    fast = evaluate(
        run_id=spec.id,
        model_dir=summary.model_dir,
        snapshot=snapshot,
        request=EvalRequest(max_eval_samples=96),
        runs_dir=runs_dir,
    )
    plain = evaluate(
        run_id=spec.id,
        model_dir=summary.model_dir,
        snapshot=snapshot,
        request=EvalRequest(max_eval_samples=96, batch_size=7, sort_by_length=False, dynamic_padding=False),
        runs_dir=runs_dir,
    )
    assert fast.examples == plain.examples == 96
    assert fast.metrics == pytest.approx(plain.metrics, abs=1e-6)


def test_evaluation_batch_size_defaults_per_device_and_an_explicit_one_is_kept() -> None:
    # CPU: 64 rows (larger batches page-fault their activations in and out); CUDA: 256.
    assert eval_batch_size(EvalRequest(), "cpu") == 64
    assert eval_batch_size(EvalRequest(), "cuda") == eval_batch_size(EvalRequest(), "cuda:1") == 256
    assert eval_batch_size(EvalRequest(batch_size=7), "cpu") == eval_batch_size(EvalRequest(batch_size=7), "cuda") == 7
