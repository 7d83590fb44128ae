"""Evaluation cells: each (model, snapshot, split) is evaluated once, then reused by every run that asks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from support.core import core_snapshot
from support.evaluation import saved_head_model
from support.models import with_label_names
from support.specs import core_spec

from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.evaluation import cells
from bert_eval.core.evaluation.batched import evaluate
from bert_eval.core.evaluation.cells import evaluate_cell
from bert_eval.core.modeling import describe_model
from bert_eval.core.records import ModelInfo, SnapshotResult
from bert_eval.core.storage.layout import CellLayout, RunLayout
from bert_eval.spec import DatasetSpec, EvalRequest


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, data_dir: Path) -> ModelInfo:
    """A classifier with SST-2's class names ('0', '1'), as a run trained on SST-2 saves it."""
    root = tmp_path_factory.mktemp("cell-models")
    saved = with_label_names(saved_head_model(tiny_model_dir, root / "classifier", data_dir, seed=1), ("0", "1"))
    return describe_model(str(saved), runs_dir=root, models_dir=None)


@pytest.fixture
def snapshot(tiny_model_dir: Path, runs_dir: Path, data_dir: Path) -> SnapshotResult:
    return core_snapshot(core_spec(tiny_model_dir, "owner"), runs_dir, data_dir)


@pytest.fixture
def inferences(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run ids of the model passes cells make (each call of the shared inference loop)."""
    calls: list[str] = []
    real = cells.infer

    def counted(**kwargs: object):
        calls.append(str(kwargs["run_id"]))
        return real(**kwargs)

    monkeypatch.setattr(cells, "infer", counted)
    return calls


def test_a_cell_is_evaluated_once_then_reused_by_any_run(
    runs_dir: Path, model: ModelInfo, snapshot: SnapshotResult, inferences: list[str]
) -> None:
    request = EvalRequest(split="validation")
    first = evaluate_cell(run_id="first", model=model, snapshot=snapshot, request=request, runs_dir=runs_dir)
    cell = CellLayout(runs_dir, model.digest, snapshot.snapshot_id, "validation")
    assert not first.reused and inferences == ["first"] and first.examples == 64
    assert cell.root == runs_dir / "evals" / f"{model.digest}-{snapshot.snapshot_id}-validation"
    assert sorted(p.name for p in cell.root.iterdir()) == ["eval.json", "predictions.parquet", "runs"]
    assert (first.path, first.predictions_path) == (str(cell.eval_file), str(cell.predictions_file))
    assert sorted(p.name for p in cell.root.parent.iterdir()) == [cell.name]  # no staging left behind
    written = cell.eval_file.stat().st_mtime_ns

    # Another run, another batch size: the same model on the same rows is not evaluated again.
    again = evaluate_cell(
        run_id="second", model=model, snapshot=snapshot, request=EvalRequest(batch_size=7), runs_dir=runs_dir
    )
    assert again.reused and again.run_id == "second" and inferences == ["first"]
    assert again.metrics == first.metrics and again.predictions_sha256 == first.predictions_sha256
    # Each run that was evaluated as the cell is recorded in it (an eval-only run's only trace: `compare` reads it).
    assert CellLayout.runs_evaluated_as(runs_dir, "second", "validation") == [cell.run_file("second")]
    assert sorted(p.name for p in (cell.root / "runs").iterdir()) == ["first.json", "second.json"]
    assert CellLayout.runs_evaluated_as(runs_dir, "second", "test") == []
    assert cell.eval_file.stat().st_mtime_ns == written
    assert json.loads(cell.eval_file.read_text())["run_id"] == "first"  # the cell records who computed it


def test_a_cell_has_the_numbers_of_the_runs_own_evaluation(
    runs_dir: Path, model: ModelInfo, snapshot: SnapshotResult
) -> None:
    request = EvalRequest(split="validation")
    cell = evaluate_cell(run_id="owner", model=model, snapshot=snapshot, request=request, runs_dir=runs_dir)
    run = evaluate(run_id="owner", model_dir=model.path, snapshot=snapshot, request=request, runs_dir=runs_dir)
    assert cell.metrics == run.metrics and cell.examples == run.examples
    # The run's own result file is as it always was: no cell fields in it.
    record = json.loads(RunLayout(runs_dir, "owner").eval_file("validation").read_text())
    assert set(record) == {
        "run_id",
        "split",
        "examples",
        "metrics",
        "duration_s",
        "path",
        "predictions_path",
        "predictions_sha256",
    }


def test_an_eval_only_snapshot_of_the_same_rows_gives_the_same_numbers(
    tiny_model_dir: Path, runs_dir: Path, data_dir: Path, model: ModelInfo, snapshot: SnapshotResult
) -> None:
    trained_on = evaluate(
        run_id="owner", model_dir=model.path, snapshot=snapshot, request=EvalRequest(), runs_dir=runs_dir
    )
    as_given = create_snapshot(
        SnapshotInput.for_model(
            run_id="judge", dataset=DatasetSpec(name="glue/sst2"), model=model, max_eval_samples=64
        ),
        runs_dir=runs_dir,
        data_dir=data_dir,
    )
    assert as_given.snapshot_id != snapshot.snapshot_id and as_given.splits == {"validation": 64}
    result = evaluate_cell(run_id="judge", model=model, snapshot=as_given, request=EvalRequest(), runs_dir=runs_dir)
    assert result.metrics == trained_on.metrics


def test_a_damaged_cell_is_kept_aside_and_evaluated_again(
    runs_dir: Path, model: ModelInfo, snapshot: SnapshotResult, inferences: list[str]
) -> None:
    request = EvalRequest()
    first = evaluate_cell(run_id="first", model=model, snapshot=snapshot, request=request, runs_dir=runs_dir)
    cell = CellLayout(runs_dir, model.digest, snapshot.snapshot_id, "validation")
    cell.predictions_file.write_bytes(cell.predictions_file.read_bytes()[:-8])  # truncated after publication

    again = evaluate_cell(run_id="second", model=model, snapshot=snapshot, request=request, runs_dir=runs_dir)
    assert not again.reused and inferences == ["first", "second"] and again.metrics == first.metrics
    aside = [p.name for p in cell.root.parent.iterdir() if p.name.startswith(".corrupt-")]
    assert len(aside) == 1 and aside[0].startswith(f".corrupt-{cell.name}-")
    # The run that evaluated it again is told why (and the cell's file does not keep that).
    assert again.evaluated_again == (
        f"its evaluation cell {cell.root} failed verification (predictions.parquet is missing or does not match "
        f"the digest its result records; kept aside as {aside[0]})"
    )
    assert "evaluated_again" not in json.loads(cell.eval_file.read_text())
    assert evaluate_cell(run_id="third", model=model, snapshot=snapshot, request=request, runs_dir=runs_dir).reused


def test_a_snapshot_labelled_for_other_classes_is_refused(
    tmp_path: Path, runs_dir: Path, model: ModelInfo, snapshot: SnapshotResult
) -> None:
    generic = with_label_names(shutil.copytree(model.path, tmp_path / "generic"), ("LABEL_0", "LABEL_1"))
    info = describe_model(str(generic), runs_dir=runs_dir, models_dir=None)
    refusal = r"run owner: the model at .* is classification with classes "
    refusal += r"\['LABEL_0', 'LABEL_1'\] but snapshot \w+ holds classification with classes \['0', '1'\]"
    with pytest.raises(InvalidInputError, match=refusal):
        evaluate_cell(run_id="owner", model=info, snapshot=snapshot, request=EvalRequest(), runs_dir=runs_dir)


def test_cell_paths_cannot_leave_the_runs_directory(
    tmp_path: Path, runs_dir: Path, model: ModelInfo, snapshot: SnapshotResult
) -> None:
    for digest, snapshot_id, split in (
        ("../../etc/x12345", "0" * 16, "validation"),
        ("0" * 16, "0" * 16, "a/b"),
        ("0" * 16, "0" * 15, "test"),
    ):
        with pytest.raises(ValueError, match="evaluation cell: "):
            CellLayout(runs_dir, digest, snapshot_id, split)

    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, runs_dir / "evals")
    with pytest.raises(
        InvalidInputError, match=r"run owner: evaluation cell \w+-\w+-validation: .*evals is a symbolic link"
    ):
        evaluate_cell(run_id="owner", model=model, snapshot=snapshot, request=EvalRequest(), runs_dir=runs_dir)
    assert list(outside.iterdir()) == []
