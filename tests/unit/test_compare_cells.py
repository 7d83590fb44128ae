"""Which evaluation cell `compare` reads for an eval-only run: the one its run id is recorded in, on the run's
own dataset; several such cells (the id reused) are refused, naming them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bert_eval.cli import app
from bert_eval.compare import _cell_of
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.storage.layout import CellLayout


def _record(runs_dir: Path, digest: str, run_id: str, dataset: str | None, split: str = "validation") -> CellLayout:
    cell = CellLayout(runs_dir, digest * 16, "b" * 16, split)
    cell.run_file(run_id).parent.mkdir(parents=True, exist_ok=True)
    cell.run_file(run_id).write_text(
        json.dumps({"run_id": run_id, "split": split, "cell": cell.name, "dataset": dataset})
    )
    return cell


def test_the_cell_on_the_runs_own_dataset_is_the_runs_evaluation(tmp_path: Path) -> None:
    _record(tmp_path, "1", "ev", "/data/other")
    own = _record(tmp_path, "2", "ev", None)
    _record(tmp_path, "3", "ev", None, split="test")
    assert _cell_of(tmp_path, "ev", "validation") == own
    assert _cell_of(tmp_path, "ev", "train") is None and _cell_of(tmp_path, "nobody", "validation") is None
    only_other = _record(tmp_path, "4", "matrix", "/data/other")
    assert _cell_of(tmp_path, "matrix", "validation") == only_other


def test_a_run_id_recorded_in_two_cells_is_refused_naming_them(tmp_path: Path) -> None:
    first, second = _record(tmp_path, "1", "ev", None), _record(tmp_path, "2", "ev", None)
    with pytest.raises(
        InvalidInputError, match=r"run ev was evaluated on 'validation' as 2 different cells"
    ) as refused:
        _cell_of(tmp_path, "ev", "validation")
    assert first.name in str(refused.value) and second.name in str(refused.value)


def test_an_unrecorded_run_is_named_in_one_line(tmp_path: Path) -> None:
    _record(tmp_path, "1", "ev", None)  # an evals/ directory and no runs/ at all: eval-only runs only
    result = CliRunner().invoke(app, ["compare", "nobody", "ev", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: run nobody has no evaluation of split 'validation'")
    assert "no evaluation cell records it" in result.stderr
