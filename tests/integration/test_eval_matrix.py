"""The evaluation matrix and eval-only runs through the real workers: cells evaluated once, reused by any
run of the same model on the same rows, and a finished experiment extended by one dataset evaluates only
the new cells."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import Stack
from support.specs import tiny_run

pytestmark = pytest.mark.integration


def _other_dataset(data_dir: Path, out: Path, rows: slice) -> Path:
    """A local dataset of SST-2 validation rows the runs never train on (a validation file only)."""
    lines = (data_dir / "glue" / "sst2" / "validation.tsv").read_text().splitlines()
    out.mkdir()
    (out / "validation.tsv").write_text("\n".join([lines[0], *lines[1:][rows]]) + "\n")
    return out


def test_matrix_cells_are_evaluated_once_and_extended_with_only_the_new_ones(
    stack: Stack, tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    stack.start_workers("training", "eval")
    first = _other_dataset(data_dir, tmp_path / "first", slice(200, 260))
    second = _other_dataset(data_dir, tmp_path / "second", slice(300, 340))
    trained = tiny_run(tiny_model_dir, "base", max_train_samples=64)
    trained["eval"] = [
        {"split": "validation", "max_eval_samples": 64},
        {"dataset": {"path": str(first)}, "split": "validation"},
    ]
    # An eval-only run of the trained run's model, on the same other dataset: the same cell.
    again = {"run_id": "base-again", "model": {"run": "base"}, "dataset": {"path": str(first)}, "train": None}
    experiment = {"experiment_id": "matrix", "runs": [trained, again]}

    result = stack.run_experiment(experiment)
    base, evaluated = result.runs
    assert (base.status, evaluated.status) == ("completed", "completed"), (base.error, evaluated.error)
    assert base.training is not None and evaluated.training is None
    [cell] = base.cells
    assert cell.dataset == str(first) and cell.evaluation.examples == 60
    # One of the two evaluations of (base's model, first dataset) computed the cell, the other reused it.
    assert sorted([cell.evaluation.reused, evaluated.evaluation.reused]) == [False, True]
    assert evaluated.metrics == cell.evaluation.metrics
    assert len(list((stack.runs_dir / "evals").iterdir())) == 1

    # Statistics per evaluation: the matrix holds every (run, dataset, split) with its interval.
    matrix = {(m.run_id, m.dataset): m for m in result.summary.matrix}
    assert set(matrix) == {("base", "glue/sst2"), ("base", str(first)), ("base-again", str(first))}
    assert all(m.low is not None and m.low <= m.value <= m.high for m in matrix.values())
    report = subprocess.run(
        [sys.executable, "-m", "bert_eval", "report", "matrix", "--out", str(tmp_path / "report")],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Evaluation matrix" in page and str(first) in page and "base-again" in page

    # Add one dataset to the finished experiment: nothing trains, only the new cell is evaluated.
    trained["eval"].append({"dataset": {"path": str(second)}, "split": "validation"})
    extended = stack.run_experiment(experiment)
    base2 = extended.runs[0]
    assert base2.training is not None and base2.training == base.training  # reused, not retrained
    assert [c.evaluation.reused for c in base2.cells] == [True, False]
    assert base2.cells[1].evaluation.examples == 40
    assert len(list((stack.runs_dir / "evals").iterdir())) == 2


def test_an_eval_only_run_of_an_unknown_run_is_refused_before_submission(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        json.dumps(
            {"runs": [{"run_id": "orphan", "model": {"run": "never-trained"}, "dataset": "glue/sst2", "train": None}]}
        )
    )
    (stack.runs_dir / "runs").mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "bert_eval", "run", str(path)],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "run_id 'orphan'" in done.stderr and "run never-trained: no such run" in done.stderr
    assert done.stderr.count("\n") == 1


def test_a_killed_eval_worker_leaves_no_cell_missing_or_computed_twice(
    stack: Stack, tiny_model_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    import time

    from bert_eval.core.data.snapshot import SnapshotInput, create_snapshot
    from bert_eval.core.evaluation.cells import evaluate_cell
    from bert_eval.core.modeling import describe_model
    from bert_eval.spec import DatasetSpec, EvalRequest

    _, eval_worker = stack.start_workers("training", "eval")
    assert (
        stack.run_experiment(
            {"experiment_id": "trained", "runs": [tiny_run(tiny_model_dir, "base", max_train_samples=64)]}
        )
        .runs[0]
        .status
        == "completed"
    )
    datasets = [_other_dataset(data_dir, tmp_path / f"set-{i}", slice(150 * i, 150 * (i + 1))) for i in range(5)]
    matrix = {
        "experiment_id": "matrix-under-fire",
        "runs": [
            {"run_id": "cells", "model": {"run": "base"}, "dataset": {"path": str(d)}, "train": None}
            for d in datasets[:1]
        ],
    }
    matrix["runs"][0]["eval"] = [{"dataset": {"path": str(d)}, "split": "validation"} for d in datasets]
    # The killed worker's evaluation is retried once its heartbeat is missed: within 5 s, not the default 30.
    background = stack.run_in_background(matrix, heartbeat_timeout_s=5)
    evals = stack.runs_dir / "evals"
    deadline = time.monotonic() + 180
    while not (evals.is_dir() and any(not p.name.startswith(".") for p in evals.iterdir())):
        assert time.monotonic() < deadline and background.running, "no evaluation cell was published"
        time.sleep(0.05)
    eval_worker.kill()  # SIGKILL: mid-matrix, the coordinator and the evaluations with it
    stack.start_worker("eval", wait=False)  # starts while the lost evaluation waits out its heartbeat
    result = background.result(timeout_s=300)

    [run] = result.runs
    assert run.status == "completed", run.error
    cells = [run.evaluation, *(c.evaluation for c in run.cells)]
    assert [c.examples for c in cells] == [150] * 5
    published = sorted(p.name for p in evals.iterdir() if not p.name.startswith("."))
    assert len(published) == 5  # no cell missing
    # None computed twice: a computed cell ends in one "evaluation cell done" line, and no worker computed a cell
    # that another had published ("published concurrently"). A cell may have no "done" line when the killed
    # worker published it and died before logging; the retried evaluation then reuses it.
    killed = eval_worker.log_file.read_text()
    replacement = "".join(w.log_file.read_text() for w in stack.workers if w.kind == "eval" and w is not eval_worker)

    def lines(log: str, event: str, name: str) -> list[str]:
        return [line for line in log.splitlines() if f'"event": "{event}"' in line and f'"cell": "{name}"' in line]

    assert "published concurrently" not in killed + replacement
    for name in published:
        done = lines(killed + replacement, "evaluation cell done", name)
        assert len(done) == 1 or (not done and lines(replacement, "evaluation cell reused", name)), (name, done)
    # Identical numbers: each cell against the same model evaluated undisturbed, in-process, elsewhere.
    fresh = tmp_path / "fresh-runs"
    model = describe_model("run:base", runs_dir=stack.runs_dir, models_dir=None)
    for dataset, cell in zip(datasets, cells, strict=True):
        snapshot = create_snapshot(
            SnapshotInput.for_model(
                run_id="check", dataset=DatasetSpec(path=str(dataset)), model=model, eval_split="validation"
            ),
            runs_dir=fresh,
            data_dir=data_dir,
        )
        undisturbed = evaluate_cell(
            run_id="check", model=model, snapshot=snapshot, request=EvalRequest(), runs_dir=fresh
        )
        assert undisturbed.metrics == cell.metrics
