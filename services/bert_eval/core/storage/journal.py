"""Append-only per-run event journal (`events.jsonl`): checkpoints, resumes, completion.

It outlives any single attempt, so counts that span worker crashes (checkpoints saved, resumes)
and the report's loss-curve markers come from here. A torn last line (crash mid-append) is skipped.
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

__all__ = ["RunJournal"]


class RunJournal:
    """The event journal at `path` (one JSON object per line, each with `event` and `time`)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, event: str, **fields: Any) -> None:
        """Append one event with `fields` (non-JSON values via `str`) and fsync it before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"event": event, "time": time.time(), **fields}, sort_keys=True, default=str)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every readable event in order; [] when the journal does not exist. Torn lines are skipped."""
        if not self.path.is_file():
            return []
        events = []
        for line in self.path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def of_kind(self, event: str) -> list[dict[str, Any]]:
        """The events named `event`, in order."""
        return [e for e in self.read() if e.get("event") == event]

    def fine_tune_calls(self) -> int:
        """How many fine_tune calls the run's `attempt` events record.

        Each `attempt` event names its call's training target (a search rung's step, or None: the end); a retry
        after a kill is the same call with a higher attempt number, so a target's attempt numbers restarting
        mean a second call. An attempt lost before it wrote anything (its worker killed as it began) leaves no
        event: a call may first appear as attempt 2."""
        attempts: dict[int | None, list[int]] = defaultdict(list)
        for event in self.of_kind("attempt"):
            attempts[event.get("stop_at_step")].append(int(event["attempt"]))
        return sum(1 + sum(later <= earlier for earlier, later in pairwise(seen)) for seen in attempts.values())
