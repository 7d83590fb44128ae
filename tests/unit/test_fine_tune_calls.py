"""Counting fine_tune calls from a run's journal (`RunJournal.fine_tune_calls`), which the search tests and the
search benchmark use to say that no rung was trained twice and none was lost."""

from __future__ import annotations

from pathlib import Path

import pytest

from bert_eval.core.storage.journal import RunJournal
from bert_eval.core.storage.layout import RunLayout


@pytest.mark.parametrize(
    ("attempts", "calls"),
    [
        ([(None, 1)], 1),
        ([(None, 1), (None, 2), (None, 3)], 1),  # one call, retried twice
        ([(3, 1), (3, 2), (9, 1), (20, 1)], 3),  # three rungs, the first retried after a kill
        ([(3, 1), (9, 2), (20, 1)], 3),  # the rung-9 call's first attempt died before writing anything
        ([(3, 1), (3, 1)], 2),  # the same rung trained by two calls
        ([(3, 1), (3, 2), (3, 1)], 2),
    ],
)
def test_calls_are_counted_per_training_target(
    tmp_path: Path, attempts: list[tuple[int | None, int]], calls: int
) -> None:
    layout = RunLayout(tmp_path, "run-a")
    layout.root.mkdir(parents=True)
    journal = RunJournal(layout.journal_file)
    for stop_at_step, attempt in attempts:
        journal.append("attempt", attempt=attempt, stop_at_step=stop_at_step)
        journal.append("checkpoint", step=1)
    assert journal.fine_tune_calls() == calls
