"""A run without a final model is named for what its journal says: failed (with the cause), paused at a
search rung, still training, or never started; never "still training or it failed"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bert_eval.cli import app
from bert_eval.core.errors import InvalidInputError
from bert_eval.core.storage.journal import RunJournal
from bert_eval.core.storage.layout import RunLayout
from bert_eval.core.storage.rundir import claim_run_dir, record_failed_training, trained_summary
from bert_eval.settings import get_settings
from bert_eval.spec import RunSpec

RUN = RunSpec.model_validate({"run_id": "base", "model": "m", "dataset": "glue/sst2"})


def _claimed(runs_dir: Path, *events: tuple[str, dict[str, object]]) -> RunLayout:
    layout = RunLayout(runs_dir, RUN.id)
    claim_run_dir(layout, RUN)
    for event, fields in events:
        RunJournal(layout.journal_file).append(event, **fields)
    return layout


def _refusal(layout: RunLayout) -> str:
    with pytest.raises(InvalidInputError) as refused:
        trained_summary(layout)
    return str(refused.value)


def test_a_run_whose_training_failed_is_named_failed_with_its_cause(tmp_path: Path) -> None:
    layout = _claimed(tmp_path, ("attempt", {"attempt": 1}))
    record_failed_training(layout, RUN, attempt=1, error="run base: model m does not exist")
    message = _refusal(layout)
    assert message.startswith("run base: training has not finished (no final model in ")
    assert "model): it failed (attempt 1: run base: model m does not exist)" in message
    assert "fix the cause and resubmit its experiment" in message and "still training" not in message


def test_a_run_retried_after_a_failure_is_still_training(tmp_path: Path) -> None:
    layout = _claimed(
        tmp_path, ("attempt", {"attempt": 1}), ("failed", {"attempt": 1, "error": "x"}), ("attempt", {"attempt": 2})
    )
    message = _refusal(layout)
    assert message.endswith("it is still training (attempt 2); wait for it (`bert-eval status base`)")
    assert "failed" not in message


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ((), ": it has not started (no attempt is recorded)"),
        (
            (("attempt", {"attempt": 1}), ("paused", {"step": 40, "attempt": 1})),
            ": it paused at step 40 (a search trial that was not promoted)",
        ),
        (
            (("attempt", {"attempt": 1}), ("completed", {"step": 80})),
            ": it completed but its final model or summary is missing",
        ),
    ],
)
def test_a_run_without_a_final_model_says_which_state_it_is_in(
    tmp_path: Path, events: tuple[tuple[str, dict[str, object]], ...], expected: str
) -> None:
    assert expected in _refusal(_claimed(tmp_path, *events))


def test_a_failure_is_journalled_only_in_the_runs_own_directory(tmp_path: Path) -> None:
    other = RUN.model_copy(update={"model": "another-model"})
    layout = _claimed(tmp_path)
    record_failed_training(layout, other, attempt=1, error="not this spec's directory")
    record_failed_training(
        RunLayout(tmp_path, "absent"), RUN.model_copy(update={"run_id": "absent"}), attempt=1, error="e"
    )
    assert not layout.journal_file.exists() and not RunLayout(tmp_path, "absent").root.exists()
    layout.journal_file.mkdir()  # unwritable journal: the failure is still reported by the caller, nothing raised
    record_failed_training(layout, RUN, attempt=1, error="e")


@pytest.fixture
def failed_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    runs_dir = tmp_path / "bert_runs"
    layout = _claimed(runs_dir, ("attempt", {"attempt": 1}))
    record_failed_training(layout, RUN, attempt=1, error="run base: no label column")
    (runs_dir / "runs" / "other").mkdir()
    monkeypatch.setenv("BERT_EVAL_RUNS_DIR", str(runs_dir))
    monkeypatch.setenv("TEMPORAL_ADDRESS", "127.0.0.1:9")
    get_settings.cache_clear()
    yield runs_dir
    get_settings.cache_clear()


def test_compare_names_a_failed_run_as_failed(failed_run: Path) -> None:
    result = CliRunner().invoke(app, ["compare", "base", "other"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: run base: training has not finished")
    assert "it failed (attempt 1: run base: no label column); fix the cause" in result.stderr


def test_evaluating_a_failed_runs_model_names_it_as_failed(failed_run: Path, tmp_path: Path) -> None:
    path = tmp_path / "experiment.yaml"
    path.write_text(
        json.dumps({"runs": [{"run_id": "ev", "model": {"run": "base"}, "dataset": "glue/sst2", "train": None}]})
    )
    result = CliRunner().invoke(app, ["run", str(path), "--no-wait"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "runs[0] (run_id 'ev'): model: run base: training has not finished" in result.stderr
    assert "it failed (attempt 1: run base: no label column)" in result.stderr
