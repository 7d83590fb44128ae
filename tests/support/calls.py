"""Counting the fine_tune calls a run's journal records (tests and the search benchmark)."""

from __future__ import annotations

from collections import defaultdict
from itertools import pairwise
from pathlib import Path

from bert_eval.core.storage.journal import RunJournal
from bert_eval.core.storage.layout import RunLayout


def fine_tune_calls(runs_dir: Path, run_id: str) -> int:
    """fine_tune calls made for a run. Each journal `attempt` entry names its call's training target (a
    search rung's step, or None: the end); a retry after a kill is the same call with a higher attempt
    number, so a target's attempt numbers restarting mean a second call. An attempt lost before it wrote
    anything (its worker killed as it began) leaves no entry: a call may first appear as attempt 2."""
    attempts: dict[int | None, list[int]] = defaultdict(list)
    for entry in RunJournal(RunLayout(runs_dir, run_id).journal_file).of_kind("attempt"):
        attempts[entry.get("stop_at_step")].append(int(entry["attempt"]))
    return sum(1 + sum(later <= earlier for earlier, later in pairwise(seen)) for seen in attempts.values())
